/** The tier policy and the transition rules of subscription-state.ts, without Stripe or a database. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type Stripe from "stripe";
import { SubscriptionStatus } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TierChangeSource } from "../../gen/switchyard/events/v1/events_pb.js";
import { readStripeSubscription, statusFromStripe, transition, type ReadSubscription } from "./subscription-state.js";

const prices = new Map([
  ["price_pro", Tier.PRO],
  ["price_team", Tier.TEAM],
]);
const tierOf = (p: string) => prices.get(p);

function stripeSub(over: { status?: string; price?: string; reason?: string; metadata?: Record<string, string>; id?: string } = {}): Stripe.Subscription {
  return {
    id: over.id ?? "sub_1",
    object: "subscription",
    customer: "cus_1",
    status: over.status ?? "active",
    cancel_at_period_end: false,
    cancellation_details: { reason: over.reason ?? null },
    metadata: over.metadata ?? {},
    items: { data: [{ price: { id: over.price ?? "price_pro" }, current_period_end: 1_900_000_000 }] },
  } as unknown as Stripe.Subscription;
}

const read = (over: Parameters<typeof stripeSub>[0] = {}) => readStripeSubscription(stripeSub(over), tierOf) as ReadSubscription;

test("only active, trialing and past-due subscriptions give their paid tier", () => {
  for (const [status, tier] of [
    ["active", Tier.PRO],
    ["trialing", Tier.PRO],
    ["past_due", Tier.PRO],
    ["incomplete", Tier.FREE],
    ["unpaid", Tier.FREE],
    ["paused", Tier.FREE],
    ["canceled", Tier.FREE],
    ["incomplete_expired", Tier.FREE],
  ] as const) {
    assert.equal(read({ status }).state.tier, tier, status);
  }
  assert.equal(statusFromStripe("unpaid"), SubscriptionStatus.UNPAID);
  assert.equal(read().state.currentPeriodEnd?.getTime(), 1_900_000_000_000);
});

test("the tier comes from the price, else from billing's metadata; an unknown price is reported", () => {
  assert.equal(read({ price: "price_team" }).state.tier, Tier.TEAM);
  assert.equal(read({ price: "price_other", metadata: { tier: "power" } }).state.tier, Tier.POWER);
  assert.match(readStripeSubscription(stripeSub({ price: "price_other" }), tierOf) as string, /price_other is none of STRIPE_PRICE_PRO/);
});

test("transitions: new, unchanged, tier change sources, and an old subscription's end after a new one began", () => {
  const first = transition(undefined, read());
  assert.ok(first.kind === "changed" && first.tierChanged && first.source === TierChangeSource.CHECKOUT);
  const stored = read().state;
  assert.equal(transition(stored, read()).kind, "unchanged");

  const cancelled = transition(stored, read({ status: "canceled" }));
  assert.ok(cancelled.kind === "changed" && cancelled.tierChanged && cancelled.source === TierChangeSource.CANCELLATION);
  const gaveUp = transition(stored, read({ status: "canceled", reason: "payment_failed" }));
  assert.ok(gaveUp.kind === "changed" && gaveUp.source === TierChangeSource.PAYMENT_FAILURE);
  const unpaid = transition(stored, read({ status: "unpaid" }));
  assert.ok(unpaid.kind === "changed" && unpaid.source === TierChangeSource.PAYMENT_FAILURE);

  const pastDue = transition(stored, read({ status: "past_due" }));
  assert.ok(pastDue.kind === "changed" && !pastDue.tierChanged);

  // The user moved to a new subscription; the old one's end changes nothing.
  assert.equal(transition(stored, read({ id: "sub_old", status: "canceled" })).kind, "superseded");
});
