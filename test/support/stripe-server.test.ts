/** The local Stripe server speaks what the official SDK expects: form encoding, errors, idempotency replay, signed events. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import Stripe from "stripe";
import { createStripeClient } from "../../services/billing/stripe-client.js";
import { decodeForm, startStripeServer, type StripeServer } from "./stripe-server.js";

let server: StripeServer;
let stripe: Stripe;
before(async () => {
  server = await startStripeServer();
  stripe = createStripeClient(server.secretKey, server.url);
});
after(() => server.close());

test("decodes Stripe's nested form encoding", () => {
  assert.deepEqual(decodeForm("a=1&metadata[user_id]=u&line_items[0][price]=p&line_items[0][quantity]=1&expand[]=x&expand[]=y"), {
    a: "1",
    metadata: { user_id: "u" },
    line_items: [{ price: "p", quantity: "1" }],
    expand: ["x", "y"],
  });
});

test("objects, Stripe's errors and Idempotency-Key replay through the SDK", async () => {
  const c = await stripe.customers.create({ metadata: { user_id: "u1" } }, { idempotencyKey: "k1" });
  assert.equal(c.object, "customer");
  assert.equal((await stripe.customers.create({ metadata: { user_id: "u1" } }, { idempotencyKey: "k1" })).id, c.id);
  await assert.rejects(stripe.customers.create({ metadata: { user_id: "u2" } }, { idempotencyKey: "k1" }), (e: Stripe.errors.StripeError) => e.type === "StripeIdempotencyError");
  await assert.rejects(stripe.subscriptions.retrieve("sub_nope"), (e: Stripe.errors.StripeError) => e.type === "StripeInvalidRequestError" && e.code === "resource_missing");
  await assert.rejects(createStripeClient("sk_test_wrong", server.url).customers.create({}), (e: Stripe.errors.StripeError) => e.type === "StripeAuthenticationError");
  await assert.rejects(
    stripe.checkout.sessions.create({ mode: "subscription", customer: c.id, line_items: [{ price: "price_unknown", quantity: 1 }], success_url: "https://x.example/ok" }),
    (e: Stripe.errors.StripeError) => e.param === "line_items[0][price]",
  );
  const s = await stripe.checkout.sessions.create({ mode: "subscription", customer: c.id, line_items: [{ price: "price_pro", quantity: 1 }], success_url: "https://x.example/ok" });
  const [created] = await server.completeCheckout(s.id);
  const sub = await stripe.subscriptions.retrieve((await stripe.checkout.sessions.retrieve(s.id)).subscription as string);
  assert.equal(sub.status, "active");
  assert.equal(sub.items.data[0]!.price.id, "price_pro");
  // Its events verify with the SDK.
  const payload = JSON.stringify(created);
  const header = Stripe.webhooks.generateTestHeaderString({ payload, secret: server.webhookSecret });
  assert.equal(Stripe.webhooks.constructEvent(payload, header, server.webhookSecret).type, "customer.subscription.created");
});
