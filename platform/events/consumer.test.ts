/** The consumer's decisions that need no server: defaults, retry delays, when to dead-letter, event ids. */
import assert from "node:assert/strict";
import { headers } from "@nats-io/nats-core";
import { test } from "node:test";
import { consumerSettings, eventIdOf, oneLine, overDelivered, retryDelay } from "./consumer.js";
import * as H from "./headers.js";

test("settings: defaults, and bounds that keep a consumer working", () => {
  assert.deepEqual(consumerSettings({}), { maxDeliver: 5, ackWaitMs: 30_000, backoff: [1000, 5000, 15_000, 30_000, 60_000], concurrency: 4, batchSize: 32 });
  const s = consumerSettings({ maxDeliver: 0, concurrency: -3, batchSize: 0, backoffMs: [] });
  assert.deepEqual([s.maxDeliver, s.concurrency, s.batchSize, s.backoff.length], [1, 1, 1, 5]);
});

test("retry delays follow the backoff, the last value repeating", () => {
  const backoff = [10, 20, 30];
  assert.deepEqual([1, 2, 3, 4, 9].map((n) => retryDelay(backoff, n)), [10, 20, 30, 30, 30]);
});

test("a delivery beyond maxDeliver is dead-lettered unless its last failure was an outage", () => {
  const settings = { maxDeliver: 3, ackWaitMs: 500 };
  assert.equal(overDelivered(3, settings, { message: "boom", transient: false }), undefined);
  assert.equal(overDelivered(4, settings, { message: "boom", transient: false }), "boom");
  assert.equal(overDelivered(4, settings, { message: "database down", transient: true }), undefined);
  assert.match(overDelivered(4, settings, undefined) ?? "", /no acknowledgement after 3 deliveries .*ack wait of 500 ms/);
});

test("event ids: Switchyard-Event-Id, else Nats-Msg-Id, else stream and sequence", () => {
  const info = { stream: "EVENTS" } as never;
  const both = headers();
  both.set(H.EVENT_ID, "e1");
  both.set(H.MSG_ID, "m1");
  const msgIdOnly = headers();
  msgIdOnly.set(H.MSG_ID, "m1");
  assert.equal(eventIdOf({ headers: both, info, seq: 7 }), "e1");
  assert.equal(eventIdOf({ headers: msgIdOnly, info, seq: 7 }), "m1");
  assert.equal(eventIdOf({ headers: undefined, info, seq: 7 }), "EVENTS.7");
});

test("errors become one short line for a header", () => {
  assert.equal(oneLine("a\r\nb\tc\0d"), "a b c d");
  assert.equal(oneLine("x".repeat(5000)).length, 1000);
});
