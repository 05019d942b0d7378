/**
 * Which subscription a Stripe event is about. Billing handles the events
 * that can move a subscription; for each it needs only the subscription and
 * customer ids, since the state itself is re-read from Stripe (see sync.ts).
 */
import type Stripe from "stripe";

/** The event types billing acts on. */
export const HANDLED_EVENT_TYPES: ReadonlySet<string> = new Set([
  "checkout.session.completed",
  "customer.subscription.created",
  "customer.subscription.updated",
  "customer.subscription.deleted",
  "invoice.paid",
  "invoice.payment_failed",
]);

/** The subscription and customer an event concerns. */
export interface EventSubject {
  readonly subscriptionId: string;
  readonly customerId: string;
}

const idOf = (v: unknown): string | undefined => (typeof v === "string" ? v : typeof (v as { id?: unknown })?.id === "string" ? (v as { id: string }).id : undefined);

/** The subscription an event is about, or undefined when billing has nothing to do with it. */
export function subjectOfEvent(event: Pick<Stripe.Event, "type" | "data">): EventSubject | undefined {
  if (!HANDLED_EVENT_TYPES.has(event.type)) return undefined;
  const o = event.data.object as unknown as Record<string, unknown>;
  const customerId = idOf(o.customer);
  let subscriptionId: string | undefined;
  if (event.type === "checkout.session.completed") subscriptionId = o.mode === "subscription" ? idOf(o.subscription) : undefined;
  else if (event.type.startsWith("customer.subscription.")) subscriptionId = idOf(o.id);
  else {
    // Invoices name their subscription under parent.subscription_details since API 2025-03-31; before, at the top.
    const parent = o.parent as { subscription_details?: { subscription?: unknown } } | null | undefined;
    subscriptionId = idOf(parent?.subscription_details?.subscription) ?? idOf(o.subscription);
  }
  return subscriptionId && customerId ? { subscriptionId, customerId } : undefined;
}
