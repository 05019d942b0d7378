/** Which subscription each handled Stripe event is about (webhook-events.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import type Stripe from "stripe";
import { subjectOfEvent } from "./webhook-events.js";

const ev = (type: string, object: Record<string, unknown>) => ({ type, data: { object } }) as unknown as Stripe.Event;

test("subscription and customer ids of each handled event type", () => {
  const want = { subscriptionId: "sub_1", customerId: "cus_1" };
  assert.deepEqual(subjectOfEvent(ev("checkout.session.completed", { mode: "subscription", subscription: "sub_1", customer: "cus_1" })), want);
  for (const t of ["created", "updated", "deleted"]) assert.deepEqual(subjectOfEvent(ev(`customer.subscription.${t}`, { id: "sub_1", customer: "cus_1" })), want);
  const parent = { subscription_details: { subscription: "sub_1" } };
  assert.deepEqual(subjectOfEvent(ev("invoice.paid", { customer: "cus_1", parent })), want);
  assert.deepEqual(subjectOfEvent(ev("invoice.payment_failed", { customer: { id: "cus_1" }, subscription: "sub_1" })), want, "older API versions");
});

test("events billing has nothing to do with", () => {
  assert.equal(subjectOfEvent(ev("checkout.session.completed", { mode: "payment", customer: "cus_1" })), undefined);
  assert.equal(subjectOfEvent(ev("invoice.paid", { customer: "cus_1", parent: null })), undefined, "an invoice of no subscription");
  assert.equal(subjectOfEvent(ev("customer.created", { id: "cus_1" })), undefined);
});
