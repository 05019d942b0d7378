/** The per-subscriber queue: bounded, and explicit about what a slow reader must do. */
import { it } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { createSubscriberQueue } from "./notify-service.js";

const item = (n: number) => ({ event: { case: "heartbeat" as const, value: { latestSequence: BigInt(n) } } });

it("a reader within the limit gets every item in order", async () => {
  const q = createSubscriberQueue(3);
  for (const n of [1, 2, 3]) q.push(item(n));
  const signal = new AbortController().signal;
  for (const n of [1, 2, 3]) assert.deepEqual(await q.next(10, signal), item(n));
  assert.equal(await q.next(10, signal), undefined);
});

it("a reader that falls past the limit gets UNAVAILABLE telling it to resubscribe, and nothing more piles up", async () => {
  const q = createSubscriberQueue(3);
  for (let n = 1; n <= 10; n++) q.push(item(n));
  const first = await q.next(10, new AbortController().signal);
  assert.ok(first instanceof ConnectError);
  assert.equal(first.code, Code.Unavailable);
  assert.match(first.rawMessage, /resubscribe with after_sequence/);
  assert.equal(await q.next(10, new AbortController().signal), undefined);
});
