/**
 * Billing's bad input, each answered with the right status and nothing
 * written (no ledger row, no subscription change, no outbox row, nothing
 * asked of Stripe): webhooks without, with a forged or with an old
 * signature, too large, not JSON, or for a customer billing does not know;
 * checkouts of the tier the user has, of the free tier, or returning to
 * another origin; reading another user's subscription; calls by services
 * where only users may act; and billing without its Stripe key.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import Stripe from "stripe";
import { BillingService } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { bearer, startAuth } from "../../services/auth/testing.js";
import { createBillingModule } from "../../services/billing/module.js";
import { CONSOLE, eventually, startBilling, type BillingUnderTest, type TestUser } from "./support.js";

let b: BillingUnderTest;
let subscribed: TestUser;
let other: TestUser;
let hook: string;
const urls = { successUrl: `${CONSOLE}/ok`, cancelUrl: `${CONSOLE}/back` };

before(async () => {
  b = await startBilling();
  hook = `${b.platform.baseUrl}/billing/webhook`;
  subscribed = await b.signUp();
  other = await b.signUp();
  const checkout = await b.billing(subscribed.accessToken).createCheckout({ tier: Tier.PRO, ...urls });
  await b.stripe.completeCheckout(checkout.checkoutSessionId);
});
after(async () => {
  await b?.stop();
});

/** Everything billing could write, and what it asked Stripe. */
async function snapshot() {
  const [counts] = await b.sql`
    select (select count(*) from billing.webhook_events)::int as ledger,
           (select count(*) from billing.customers)::int as customers,
           (select count(*) from billing.idempotent_answers)::int as answers,
           (select count(*) from platform.outbox)::int as outbox,
           (select coalesce(string_agg(user_id || ':' || tier || ':' || status || ':' || cancel_at_period_end, ',' order by user_id), '') from billing.subscriptions) as subscriptions`;
  return { ...counts, stripeRequests: b.stripe.requests.length };
}

async function unchangedBy(work: () => Promise<void>): Promise<void> {
  const before_ = await snapshot();
  await work();
  assert.deepEqual(await snapshot(), before_, "nothing written, nothing asked of Stripe");
}

async function refused(call: Promise<unknown>, code: Code, message: RegExp): Promise<void> {
  const err = await call.then(
    () => assert.fail(`expected ${Code[code]}`),
    (e: unknown) => ConnectError.from(e),
  );
  assert.equal(err.code, code, err.message);
  assert.match(err.rawMessage, message);
}

describe("the webhook", () => {
  const event = () => b.stripe.events.find((e) => e.type === "customer.subscription.updated" || e.type === "customer.subscription.created")!;

  test("without a Stripe-Signature: 400", () =>
    unchangedBy(async () => {
      const r = await b.stripe.deliver(event(), { url: hook, signatureHeader: null });
      assert.equal(r.status, 400);
      assert.match(JSON.parse(r.body).error, /missing Stripe-Signature/);
      const bare = await fetch(hook, { method: "POST", body: "{}" });
      assert.equal(bare.status, 400);
    }));

  test("with a forged signature: 400", () =>
    unchangedBy(async () => {
      const forged = await b.stripe.deliver(event(), { url: hook, secret: "whsec_not_the_endpoint_secret" });
      assert.equal(forged.status, 400);
      assert.match(JSON.parse(forged.body).error, /signature verification failed/);
      const garbage = await b.stripe.deliver(event(), { url: hook, signatureHeader: "t=1,v1=00" });
      assert.equal(garbage.status, 400);
      // A body changed after signing.
      const signed = Stripe.webhooks.generateTestHeaderString({ payload: JSON.stringify(event()), secret: b.stripe.webhookSecret });
      const tampered = await b.stripe.deliver(event(), { url: hook, signatureHeader: signed, rawBody: JSON.stringify({ ...event(), type: "customer.subscription.deleted" }) });
      assert.equal(tampered.status, 400);
    }));

  test("with a signature older than the tolerance (300 s): 400", () =>
    unchangedBy(async () => {
      const r = await b.stripe.deliver(event(), { url: hook, timestamp: Math.floor(Date.now() / 1000) - 301 });
      assert.equal(r.status, 400);
      assert.match(JSON.parse(r.body).error, /tolerance/i);
    }));

  test("a 2 MiB body: 413", () =>
    unchangedBy(async () => {
      const big = JSON.stringify({ ...event(), id: "evt_big", padding: "x".repeat(2 * 1024 * 1024) });
      const r = await b.stripe.deliver(event(), { url: hook, rawBody: big });
      assert.equal(r.status, 413);
    }));

  test("a signed body that is not JSON: 400", () =>
    unchangedBy(async () => {
      const r = await b.stripe.deliver(event(), { url: hook, rawBody: "not json" });
      assert.equal(r.status, 400);
    }));

  test("a validly signed event for a customer billing does not know: 2xx, logged, nothing changed", () =>
    unchangedBy(async () => {
      const sub = { ...[...b.stripe.subscriptions.values()][0]!, id: "sub_elsewhere", customer: "cus_elsewhere" };
      const e = b.stripe.makeEvent("customer.subscription.updated", sub);
      const r = await b.stripe.deliver(e, { url: hook });
      assert.equal(r.status, 200);
      assert.equal(JSON.parse(r.body).outcome, "unknown-customer");
      await eventually(async () => /customer billing does not know/.test(b.platform.output()), "the warning in the log");
    }));

  test("GET is not allowed", async () => {
    assert.equal((await fetch(hook)).status, 405);
  });
});

describe("the RPCs", () => {
  test("checking out the tier the user already has: FAILED_PRECONDITION", () =>
    unchangedBy(() => refused(b.billing(subscribed.accessToken).createCheckout({ tier: Tier.PRO, ...urls }), Code.FailedPrecondition, /already subscribe to the pro tier/)));

  test("redirect URLs outside the allowed origins: INVALID_ARGUMENT", () =>
    unchangedBy(async () => {
      const billing = b.billing(other.accessToken);
      await refused(billing.createCheckout({ tier: Tier.PRO, successUrl: "https://evil.example.com/ok", cancelUrl: urls.cancelUrl }), Code.InvalidArgument, /success_url: origin https:\/\/evil\.example\.com is not allowed/);
      await refused(billing.createCheckout({ tier: Tier.PRO, successUrl: urls.successUrl, cancelUrl: "http://console.example.com/back" }), Code.InvalidArgument, /cancel_url/);
      await refused(billing.createCheckout({ tier: Tier.PRO, successUrl: "javascript:alert(1)", cancelUrl: urls.cancelUrl }), Code.InvalidArgument, /success_url/);
    }));

  test("the free tier, or none: INVALID_ARGUMENT", () =>
    unchangedBy(async () => {
      const billing = b.billing(other.accessToken);
      await refused(billing.createCheckout({ tier: Tier.FREE, ...urls }), Code.InvalidArgument, /TIER_PRO, TIER_POWER or TIER_TEAM/);
      await refused(billing.createCheckout({ tier: Tier.UNSPECIFIED, ...urls }), Code.InvalidArgument, /tier/);
    }));

  test("an idempotency key reused for another request: ALREADY_EXISTS", async () => {
    const billing = b.billing(other.accessToken);
    await billing.createCheckout({ tier: Tier.POWER, ...urls, idempotencyKey: "k-1" });
    await unchangedBy(() => refused(billing.createCheckout({ tier: Tier.TEAM, ...urls, idempotencyKey: "k-1" }), Code.AlreadyExists, /idempotency_key/));
  });

  test("a user reading another user's subscription: NOT_FOUND, as for a user that does not exist; without a token: UNAUTHENTICATED", () =>
    unchangedBy(async () => {
      await refused(b.billing(other.accessToken).getSubscription({ userId: subscribed.userId }), Code.NotFound, /no subscription/);
      await refused(b.billing(other.accessToken).getSubscription({ userId: "00000000-0000-4000-8000-000000000000" }), Code.NotFound, /no subscription/);
      const anonymous = createClient(BillingService, createGrpcTransport({ baseUrl: b.platform.baseUrl }));
      await refused(anonymous.getSubscription({}), Code.Unauthenticated, /./);
    }));

  test("a service reads any user's subscription but may not check out or cancel", async () => {
    const minted = spawnSync(process.execPath, ["--import", "tsx", "services/auth/mint-service-token.ts", "chat"], { env: { ...process.env, ...b.env }, encoding: "utf8" });
    assert.equal(minted.status, 0, minted.stderr);
    const service = b.billing(minted.stdout.trim());
    const sub = (await service.getSubscription({ userId: subscribed.userId })).subscription!;
    assert.equal(sub.tier, Tier.PRO);
    await unchangedBy(async () => {
      await refused(service.getSubscription({}), Code.InvalidArgument, /a service must name the user/);
      await refused(service.createCheckout({ tier: Tier.TEAM, ...urls }), Code.PermissionDenied, /for users/);
      await refused(service.cancelSubscription({ atPeriodEnd: true }), Code.PermissionDenied, /for users/);
    });
  });
});

test("without STRIPE_SECRET_KEY: FAILED_PRECONDITION naming it; the webhook without its secret: 503 naming it", async () => {
  const a = await startAuth({ modules: [createBillingModule({})] });
  try {
    const user = await a.client.register({ email: `u${Date.now()}@example.com`, password: "correct horse battery staple" });
    const billing = createClient(BillingService, createGrpcTransport({ baseUrl: a.baseUrl, interceptors: [bearer(user.tokens!.accessToken)] }));
    await refused(billing.getSubscription({}), Code.FailedPrecondition, /STRIPE_SECRET_KEY/);
    await refused(billing.createCheckout({ tier: Tier.PRO, ...urls }), Code.FailedPrecondition, /STRIPE_SECRET_KEY/);
    const unsigned = await fetch(`${a.baseUrl}/billing/webhook`, { method: "POST", body: "{}" });
    assert.equal(unsigned.status, 400);
    const signed = await fetch(`${a.baseUrl}/billing/webhook`, { method: "POST", body: "{}", headers: { "stripe-signature": "t=1,v1=00" } });
    assert.equal(signed.status, 503);
    assert.match(((await signed.json()) as { error: string }).error, /STRIPE_WEBHOOK_SECRET/);
  } finally {
    await a.stop();
  }
});
