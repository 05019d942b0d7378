/**
 * What a Stripe subscription means for a user, and what changes when it
 * moves: pure functions, so the policy is tested without Stripe or a database.
 *
 * The policy (also in the contract, billing.proto): ACTIVE, TRIALING and
 * PAST_DUE give the subscription's paid tier (past due: Stripe is still
 * retrying the payment); every other status gives TIER_FREE. A subscription
 * Stripe gave up on (canceled for non-payment, unpaid, paused) is a payment
 * failure; one ended by the user is a cancellation.
 */
import type Stripe from "stripe";
import { SubscriptionStatus } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TierChangeSource } from "../../gen/switchyard/events/v1/events_pb.js";
import { tierFromClaim } from "../../platform/index.js";

/** A subscription as billing stores it. */
export interface SubscriptionState {
  readonly stripeSubscriptionId: string;
  /** The tier it gives now (TIER_FREE unless its status is paid). */
  readonly tier: Tier;
  readonly status: SubscriptionStatus;
  readonly currentPeriodEnd: Date | undefined;
  readonly cancelAtPeriodEnd: boolean;
}

/** A Stripe subscription read as a state, with why it ended when it did. */
export interface ReadSubscription {
  readonly state: SubscriptionState;
  readonly customerId: string;
  /** Stripe gave up collecting a payment (canceled for non-payment, unpaid, paused). */
  readonly endedForNonPayment: boolean;
}

const paidStatuses = new Set([SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE]);

/** Whether `status` gives the subscription's paid tier. */
export function isPaidStatus(status: SubscriptionStatus): boolean {
  return paidStatuses.has(status);
}

/** Stripe's subscription status as the contract's. */
export function statusFromStripe(status: Stripe.Subscription.Status): SubscriptionStatus {
  switch (status) {
    case "active":
      return SubscriptionStatus.ACTIVE;
    case "trialing":
      return SubscriptionStatus.TRIALING;
    case "past_due":
      return SubscriptionStatus.PAST_DUE;
    case "incomplete":
      return SubscriptionStatus.INCOMPLETE;
    case "unpaid":
    case "paused":
      return SubscriptionStatus.UNPAID;
    default: // canceled, incomplete_expired
      return SubscriptionStatus.CANCELED;
  }
}

/**
 * Reads a Stripe subscription: its paid tier from its first item's price
 * (`tierOfPrice`), else from the `tier` metadata billing set at checkout.
 * Returns a reason instead when the tier cannot be known.
 */
export function readStripeSubscription(sub: Stripe.Subscription, tierOfPrice: (priceId: string) => Tier | undefined): ReadSubscription | string {
  const item = sub.items?.data?.[0];
  const priceTier = item?.price?.id ? tierOfPrice(item.price.id) : undefined;
  const metaTier = tierFromClaim(sub.metadata?.tier);
  const paidTier = priceTier ?? metaTier;
  if (paidTier === undefined || paidTier === Tier.FREE || paidTier === Tier.UNSPECIFIED) {
    return `subscription ${sub.id}: price ${item?.price?.id ?? "(none)"} is none of STRIPE_PRICE_PRO, STRIPE_PRICE_POWER, STRIPE_PRICE_TEAM`;
  }
  const status = statusFromStripe(sub.status);
  const periodEnd = item?.current_period_end;
  return {
    customerId: typeof sub.customer === "string" ? sub.customer : sub.customer.id,
    endedForNonPayment: status === SubscriptionStatus.UNPAID || (status === SubscriptionStatus.CANCELED && sub.cancellation_details?.reason === "payment_failed"),
    state: {
      stripeSubscriptionId: sub.id,
      tier: isPaidStatus(status) ? paidTier : Tier.FREE,
      status,
      currentPeriodEnd: periodEnd ? new Date(periodEnd * 1000) : undefined,
      cancelAtPeriodEnd: sub.cancel_at_period_end,
    },
  };
}

/** What applying a read subscription over the stored one does. */
export type Transition =
  | { readonly kind: "unchanged" }
  /** The event is about an ended subscription while another one is live: it changes nothing. */
  | { readonly kind: "superseded" }
  | { readonly kind: "changed"; readonly next: SubscriptionState; readonly tierChanged: boolean; readonly source: TierChangeSource };

/** Decides what `read` does to the user's `stored` subscription (undefined: never had one). */
export function transition(stored: SubscriptionState | undefined, read: ReadSubscription): Transition {
  const next = read.state;
  if (stored && stored.stripeSubscriptionId !== next.stripeSubscriptionId && isPaidStatus(stored.status) && !isPaidStatus(next.status)) {
    return { kind: "superseded" };
  }
  const before = stored ?? { tier: Tier.FREE, status: SubscriptionStatus.NONE, currentPeriodEnd: undefined, cancelAtPeriodEnd: false, stripeSubscriptionId: "" };
  const same =
    before.stripeSubscriptionId === next.stripeSubscriptionId &&
    before.tier === next.tier &&
    before.status === next.status &&
    before.cancelAtPeriodEnd === next.cancelAtPeriodEnd &&
    before.currentPeriodEnd?.getTime() === next.currentPeriodEnd?.getTime();
  if (same) return { kind: "unchanged" };
  const source =
    next.tier !== Tier.FREE ? TierChangeSource.CHECKOUT : read.endedForNonPayment ? TierChangeSource.PAYMENT_FAILURE : TierChangeSource.CANCELLATION;
  return { kind: "changed", next, tierChanged: before.tier !== next.tier, source };
}
