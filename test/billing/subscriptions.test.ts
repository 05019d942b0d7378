/**
 * Billing end to end, in separate processes: the platform (auth + billing,
 * `app/main.ts`) on a real PostgreSQL and nats-server, Stripe played by the
 * local server in test/support/stripe-server.ts through the official SDK.
 *
 * - checkout, paid, webhook: GetSubscription ACTIVE at pro, the next token
 *   says pro, and the user's rate limit is pro's;
 * - a webhook delivered twice and an older update after a newer one: one
 *   TierChanged, the final state right;
 * - cancel at period end, then the subscription's end: free everywhere;
 * - cancel at once, retried with and without an idempotency key;
 * - ChangeTier moves the one subscription to another tier in place.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeJwt } from "jose";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SubscriptionStatus } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TierChangeSource } from "../../gen/switchyard/events/v1/events_pb.js";
import { CONSOLE, eventually, startBilling, type BillingUnderTest, type TestUser } from "./support.js";

let b: BillingUnderTest;
before(async () => {
  b = await startBilling();
});
after(async () => {
  await b?.stop();
});

const urls = { successUrl: `${CONSOLE}/billing/done?session={CHECKOUT_SESSION_ID}`, cancelUrl: `${CONSOLE}/billing` };

/** Checks the user out to `tier` and pays; returns the Stripe subscription id. */
async function subscribe(user: TestUser, tier = Tier.PRO): Promise<string> {
  const checkout = await b.billing(user.accessToken).createCheckout({ tier, ...urls });
  await b.stripe.completeCheckout(checkout.checkoutSessionId);
  return b.stripe.sessions.get(checkout.checkoutSessionId)!.subscription as string;
}

/** Refreshes until the access token carries `tier` (auth applies TierChanged from JetStream); returns the new tokens. */
async function tokenWithTier(user: TestUser, tier: string): Promise<TestUser> {
  let current = user;
  return eventually(async () => {
    const res = await b.auth().refresh({ refreshToken: current.refreshToken });
    current = { ...user, accessToken: res.tokens!.accessToken, refreshToken: res.tokens!.refreshToken };
    return decodeJwt(current.accessToken).tier === tier ? current : undefined;
  }, `a token with tier ${tier}`);
}

describe("checkout to pro", () => {
  test("checkout.session.completed makes the subscription ACTIVE at pro; the next token and the rate limit follow", async () => {
    const user = await b.signUp();
    const billing = b.billing(user.accessToken);
    const before_ = await billing.getSubscription({});
    assert.equal(before_.subscription?.tier, Tier.FREE);
    assert.equal(before_.subscription?.status, SubscriptionStatus.NONE);

    const checkout = await billing.createCheckout({ tier: Tier.PRO, ...urls, idempotencyKey: "first-checkout" });
    assert.match(checkout.checkoutUrl, new RegExp(`^${b.stripe.url}/checkout/cs_test_`));
    const session = b.stripe.sessions.get(checkout.checkoutSessionId)!;
    assert.equal(session.client_reference_id, user.userId);
    assert.deepEqual(session.metadata, { user_id: user.userId, tier: "pro" });
    assert.equal(session.mode, "subscription");
    const customer = b.stripe.customers.get(session.customer as string)!;
    assert.deepEqual(customer.metadata, { user_id: user.userId });
    // Same key, same request: the first session, not a second one; the customer is made once.
    const again = await billing.createCheckout({ tier: Tier.PRO, ...urls, idempotencyKey: "first-checkout" });
    assert.equal(again.checkoutSessionId, checkout.checkoutSessionId);
    await billing.createCheckout({ tier: Tier.PRO, ...urls });
    assert.equal([...b.stripe.customers.values()].filter((c) => (c.metadata as { user_id?: string }).user_id === user.userId).length, 1);
    const keyed = b.stripe.requests.filter((r) => r.path === "/v1/customers" || r.path === "/v1/checkout/sessions");
    assert.ok(keyed.every((r) => r.idempotencyKey), "every create call carries an Idempotency-Key");
    assert.ok(keyed.some((r) => r.idempotencyKey === `sy-customer-${user.userId}`), "the customer's key is derived from the user");

    // Paying delivers customer.subscription.created, invoice.paid and checkout.session.completed to the webhook.
    const events = await b.stripe.completeCheckout(checkout.checkoutSessionId);
    assert.deepEqual(events.map((e) => e.type), ["customer.subscription.created", "invoice.paid", "checkout.session.completed"]);
    const sub = (await billing.getSubscription({})).subscription!;
    assert.equal(sub.status, SubscriptionStatus.ACTIVE);
    assert.equal(sub.tier, Tier.PRO);
    assert.equal(sub.name, `users/${user.userId}/subscription`);
    assert.ok(sub.currentPeriodEnd && Number(sub.currentPeriodEnd.seconds) > Date.now() / 1000);

    const pro = await tokenWithTier(user, "pro");
    const changes = await b.tierChanges(user.userId);
    assert.equal(changes.length, 1);
    assert.equal(changes[0]!.oldTier, Tier.FREE);
    assert.equal(changes[0]!.newTier, Tier.PRO);
    assert.equal(changes[0]!.source, TierChangeSource.CHECKOUT);

    // The rate limit follows the token: pro allows 45 a minute here (free 30); a few calls were spent above.
    const proBilling = b.billing(pro.accessToken);
    let served = 0;
    let refusal: ConnectError | undefined;
    for (let i = 0; i < 60 && !refusal; i++) {
      try {
        await proBilling.getSubscription({});
        served++;
      } catch (err) {
        refusal = ConnectError.from(err);
      }
    }
    assert.ok(refusal, "the limit is reached within 60 calls");
    assert.equal(refusal.code, Code.ResourceExhausted);
    assert.match(refusal.message, /the pro tier allows 45 requests per minute/);
    assert.ok(served > 30, `more calls than free's 30 were served (${served})`);
  });
});

describe("webhooks at least once, in any order", () => {
  test("a repeated event and an older update after a newer one: one TierChanged each way, the newest state kept", async () => {
    const user = await b.signUp();
    const subId = await subscribe(user, Tier.PRO);
    const completed = b.stripe.events.find((e) => e.type === "checkout.session.completed" && (e.data.object as { subscription?: string }).subscription === subId)!;
    const redelivered = await b.stripe.deliver(completed);
    assert.equal(redelivered.status, 200);
    assert.equal(JSON.parse(redelivered.body).outcome, "duplicate");

    // Two changes at Stripe, delivered newest first, the newest twice, then the older one.
    const url = b.stripe.webhookUrl;
    b.stripe.webhookUrl = undefined;
    const [older] = await b.stripe.changeSubscription(subId, { price: "price_power" });
    const [newer] = await b.stripe.changeSubscription(subId, { price: "price_team" });
    b.stripe.webhookUrl = url;
    const outcomes = [];
    for (const e of [newer!, newer!, older!]) {
      const r = await b.stripe.deliver(e);
      assert.equal(r.status, 200, r.body);
      outcomes.push(JSON.parse(r.body).outcome);
    }
    assert.deepEqual(outcomes, ["applied", "duplicate", "unchanged"]);
    const sub = (await b.billing(user.accessToken).getSubscription({})).subscription!;
    assert.equal(sub.tier, Tier.TEAM);
    assert.equal(sub.status, SubscriptionStatus.ACTIVE);
    const changes = await b.tierChanges(user.userId);
    assert.deepEqual(
      changes.map((c) => [c.oldTier, c.newTier]),
      [
        [Tier.FREE, Tier.PRO],
        [Tier.PRO, Tier.TEAM],
      ],
    );
    await tokenWithTier(user, "team");
  });

  test("the same event delivered five times at once: applied once, one TierChanged", async () => {
    const user = await b.signUp();
    const subId = await subscribe(user, Tier.PRO);
    const url = b.stripe.webhookUrl;
    b.stripe.webhookUrl = undefined;
    const [change] = await b.stripe.changeSubscription(subId, { price: "price_power" });
    b.stripe.webhookUrl = url;
    const answers = await Promise.all(Array.from({ length: 5 }, () => b.stripe.deliver(change!)));
    assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200, 200]);
    assert.deepEqual(answers.map((a) => JSON.parse(a.body).outcome).sort(), ["applied", "duplicate", "duplicate", "duplicate", "duplicate"]);
    const changes = await b.tierChanges(user.userId);
    assert.deepEqual(changes.map((c) => c.newTier), [Tier.PRO, Tier.POWER]);
  });

  test("a failed payment keeps the tier (PAST_DUE); when Stripe gives up, the tier falls to free", async () => {
    const user = await b.signUp();
    const subId = await subscribe(user, Tier.POWER);
    await b.stripe.failPayment(subId);
    let sub = (await b.billing(user.accessToken).getSubscription({})).subscription!;
    assert.equal(sub.status, SubscriptionStatus.PAST_DUE);
    assert.equal(sub.tier, Tier.POWER);
    await b.stripe.changeSubscription(subId, { status: "canceled", cancellationReason: "payment_failed" });
    sub = (await b.billing(user.accessToken).getSubscription({})).subscription!;
    assert.equal(sub.status, SubscriptionStatus.CANCELED);
    assert.equal(sub.tier, Tier.FREE);
    const changes = await b.tierChanges(user.userId);
    assert.deepEqual(changes.map((c) => [c.newTier, c.source]), [
      [Tier.POWER, TierChangeSource.CHECKOUT],
      [Tier.FREE, TierChangeSource.PAYMENT_FAILURE],
    ]);
  });
});

/** Requests that change something at Stripe (webhooks make billing read, at their own pace). */
const writesToStripe = () => b.stripe.requests.filter((r) => r.method !== "GET").length;

describe("changing tier", () => {
  test("pro to power changes the one subscription's price in place: no second subscription, TierChanged once, the token follows", async () => {
    const user = await b.signUp();
    const subId = await subscribe(user, Tier.PRO);
    const pro = await tokenWithTier(user, "pro");
    const billing = b.billing(pro.accessToken);

    await assert.rejects(billing.createCheckout({ tier: Tier.POWER, ...urls }), (e: unknown) => {
      const err = ConnectError.from(e);
      return err.code === Code.FailedPrecondition && /ChangeTier/.test(err.rawMessage) && /second subscription/.test(err.rawMessage);
    });
    const changed = (await billing.changeTier({ tier: Tier.POWER, idempotencyKey: "to-power" })).subscription!;
    assert.equal(changed.tier, Tier.POWER);
    assert.equal(changed.status, SubscriptionStatus.ACTIVE);
    const mine = [...b.stripe.subscriptions.values()].filter((s) => (s.metadata as { user_id?: string }).user_id === user.userId);
    assert.deepEqual(mine.map((s) => s.id), [subId], "one subscription at Stripe");
    assert.equal((mine[0]!.items as { data: { price: { id: string } }[] }).data[0]!.price.id, "price_power");
    const update = b.stripe.requests.find((r) => r.path === `/v1/subscriptions/${subId}` && r.method === "POST");
    assert.equal(update?.idempotencyKey, `sy-change-${user.userId}-to-power`);

    // A retry with the same key answers the first result and asks nothing more of Stripe.
    const asked = b.stripe.requests.filter((r) => r.path === `/v1/subscriptions/${subId}` && r.method === "POST").length;
    assert.deepEqual((await billing.changeTier({ tier: Tier.POWER, idempotencyKey: "to-power" })).subscription, changed);
    assert.equal(b.stripe.requests.filter((r) => r.path === `/v1/subscriptions/${subId}` && r.method === "POST").length, asked);

    // The webhook for the same change arrives later and changes nothing more.
    await eventually(async () => (await b.tierChanges(user.userId)).length === 2 || undefined, "TierChanged pro → power");
    const changes = await b.tierChanges(user.userId);
    assert.deepEqual(changes.map((c) => [c.oldTier, c.newTier]), [
      [Tier.FREE, Tier.PRO],
      [Tier.PRO, Tier.POWER],
    ]);
    await tokenWithTier(pro, "power");
  });

  test("without a paid subscription, to the tier the user has, or to free: refused, nothing asked of Stripe", async () => {
    const free = b.billing((await b.signUp()).accessToken);
    const asked = writesToStripe();
    await assert.rejects(free.changeTier({ tier: Tier.PRO }), (e: unknown) => ConnectError.from(e).code === Code.FailedPrecondition && /CreateCheckout/.test(ConnectError.from(e).rawMessage));
    assert.equal(writesToStripe(), asked);

    const user = await b.signUp();
    await subscribe(user, Tier.TEAM);
    const billing = b.billing(user.accessToken);
    const before_ = writesToStripe();
    await assert.rejects(billing.changeTier({ tier: Tier.TEAM }), (e: unknown) => ConnectError.from(e).code === Code.FailedPrecondition && /already subscribe to the team tier/.test(ConnectError.from(e).rawMessage));
    await assert.rejects(billing.changeTier({ tier: Tier.FREE }), (e: unknown) => ConnectError.from(e).code === Code.InvalidArgument && /cancel the subscription/.test(ConnectError.from(e).rawMessage));
    await billing.changeTier({ tier: Tier.PRO, idempotencyKey: "k-2" });
    await assert.rejects(billing.changeTier({ tier: Tier.POWER, idempotencyKey: "k-2" }), (e: unknown) => ConnectError.from(e).code === Code.AlreadyExists);
    assert.equal(writesToStripe(), before_ + 1, "only the one change reached Stripe");
  });
});

describe("cancellation", () => {
  test("cancel at period end keeps pro until customer.subscription.deleted, then free everywhere", async () => {
    const user = await b.signUp();
    const subId = await subscribe(user, Tier.PRO);
    const pro = await tokenWithTier(user, "pro");
    const billing = b.billing(pro.accessToken);

    const cancelled = (await billing.cancelSubscription({ atPeriodEnd: true })).subscription!;
    assert.equal(cancelled.cancelAtPeriodEnd, true);
    assert.equal(cancelled.tier, Tier.PRO);
    assert.equal(cancelled.status, SubscriptionStatus.ACTIVE);
    assert.equal(b.stripe.subscriptions.get(subId)!.cancel_at_period_end, true);
    // Asking again changes nothing.
    const again = (await billing.cancelSubscription({ atPeriodEnd: true })).subscription!;
    assert.deepEqual(again, cancelled);

    // The period ends: Stripe ends the subscription and says so.
    const [deleted] = await b.stripe.changeSubscription(subId, { status: "canceled" });
    assert.equal(deleted!.type, "customer.subscription.deleted");
    const sub = (await billing.getSubscription({})).subscription!;
    assert.equal(sub.status, SubscriptionStatus.CANCELED);
    assert.equal(sub.tier, Tier.FREE);
    await tokenWithTier(pro, "free");
    const changes = await b.tierChanges(user.userId);
    assert.deepEqual(changes.map((c) => [c.newTier, c.source]), [
      [Tier.PRO, TierChangeSource.CHECKOUT],
      [Tier.FREE, TierChangeSource.CANCELLATION],
    ]);
    // Nothing left to cancel.
    const err = await billing.cancelSubscription({ atPeriodEnd: true }).then(
      () => assert.fail("expected FAILED_PRECONDITION"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(err.code, Code.FailedPrecondition);
  });

  test("cancel at once drops the tier now; a retry with the key returns the first answer", async () => {
    const user = await b.signUp();
    await subscribe(user, Tier.TEAM);
    const billing = b.billing(user.accessToken);
    const first = (await billing.cancelSubscription({ atPeriodEnd: false, idempotencyKey: "cancel-1" })).subscription!;
    assert.equal(first.status, SubscriptionStatus.CANCELED);
    assert.equal(first.tier, Tier.FREE);
    assert.deepEqual((await billing.cancelSubscription({ atPeriodEnd: false, idempotencyKey: "cancel-1" })).subscription, first);
    const reused = await billing.cancelSubscription({ atPeriodEnd: true, idempotencyKey: "cancel-1" }).then(
      () => assert.fail("expected ALREADY_EXISTS"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(reused.code, Code.AlreadyExists);
    const retried = await billing.cancelSubscription({ atPeriodEnd: false }).then(
      () => assert.fail("expected FAILED_PRECONDITION"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(retried.code, Code.FailedPrecondition);
    // Stripe's customer.subscription.deleted arrives after the RPC applied it: no second TierChanged.
    const [{ stripe_customer_id: customer }] = await b.sql<{ stripe_customer_id: string }[]>`select stripe_customer_id from billing.customers where user_id = ${user.userId}`;
    const deleted = await eventually(
      async () => b.stripe.events.find((e) => e.type === "customer.subscription.deleted" && e.data.object.customer === customer),
      "Stripe's customer.subscription.deleted",
    );
    const [ledger] = await eventually(async () => {
      const rows = await b.sql<{ outcome: string }[]>`select outcome from billing.webhook_events where event_id = ${deleted.id}`;
      return rows.length > 0 && rows;
    }, "the deleted event in the ledger");
    assert.equal(ledger!.outcome, "unchanged");
    const changes = await b.tierChanges(user.userId);
    assert.deepEqual(changes.map((c) => c.newTier), [Tier.TEAM, Tier.FREE]);
  });
});
