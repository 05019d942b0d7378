/**
 * Billing killed (SIGKILL) after committing a webhook event's effects and
 * before answering: Stripe never got its 2xx, so it delivers the event
 * again; the redelivery, to the restarted process, is a no-op, and
 * TierChanged is published once.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { SubscriptionStatus } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { CONSOLE, startBilling, type BillingUnderTest } from "./support.js";

let b: BillingUnderTest;
before(async () => {
  b = await startBilling({ nodeArgs: ["--import", new URL("./crash-before-answer.ts", import.meta.url).pathname] });
});
after(async () => {
  await b?.stop();
});

test("a crash between commit and answer: the redelivery is a no-op, TierChanged once", async () => {
  const user = await b.signUp();
  const checkout = await b.billing(user.accessToken).createCheckout({ tier: Tier.PRO, successUrl: `${CONSOLE}/ok`, cancelUrl: `${CONSOLE}/no` });
  const url = b.stripe.webhookUrl;
  b.stripe.webhookUrl = undefined; // record only: this test delivers by hand
  const events = await b.stripe.completeCheckout(checkout.checkoutSessionId);
  const completed = events.find((e) => e.type === "checkout.session.completed")!;

  // The process dies before answering: Stripe sees a broken connection.
  const died = new Promise((r) => b.platform.child.once("exit", (_code, signal) => r(signal)));
  await assert.rejects(b.stripe.deliver(completed, { url }), "no answer");
  assert.equal(await died, "SIGKILL");
  const [row] = await b.sql<{ tier: number; status: number }[]>`select tier, status from billing.subscriptions where user_id = ${user.userId}`;
  assert.deepEqual({ ...row }, { tier: Tier.PRO, status: SubscriptionStatus.ACTIVE }, "the effects were committed before the kill");

  // Stripe redelivers to the restarted process (no crash hook this time), then the other events.
  await b.restart();
  const again = await b.stripe.deliver(completed, { url: `${b.platform.baseUrl}/billing/webhook` });
  assert.equal(again.status, 200);
  assert.equal(JSON.parse(again.body).outcome, "duplicate");
  for (const e of events.filter((x) => x !== completed)) {
    const r = await b.stripe.deliver(e, { url: `${b.platform.baseUrl}/billing/webhook` });
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).outcome, "unchanged");
  }
  const sub = (await b.billing(user.accessToken).getSubscription({})).subscription!;
  assert.equal(sub.tier, Tier.PRO);
  const changes = await b.tierChanges(user.userId);
  assert.deepEqual(changes.map((c) => [c.oldTier, c.newTier]), [[Tier.FREE, Tier.PRO]]);
});
