/**
 * Gap detection in the notification fan-out, in process with a real
 * nats-server: a receiver whose live copy of one notification is lost (the
 * subscription drops it, as a reconnect would) fetches it from the stream
 * before delivering the next, so it still sees every notification in order,
 * once.
 */
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Notification } from "../gen/switchyard/notify/v1/notify_pb.js";
import { createLogger } from "../platform/index.js";
import { dropPrefix, eventually, newPrefix, newUser } from "../test/gateway/support.js";
import { natsUrl } from "../test/support/infra.js";
import { ensureGatewayStore } from "./nats-setup.js";
import { structBytes } from "./codec.js";
import { createNotifications, Cursor, newNotification, sameContent } from "./notifications.js";
import { gatewayNames } from "./subjects.js";

let nc: NatsConnection;
let url: string;
const prefix = newPrefix();

before(async () => {
  url = await natsUrl();
  nc = await connect({ servers: url });
});

after(async () => {
  await nc.close();
  await dropPrefix(url, prefix);
});

/** The same connection, except that the second message each subscription receives is lost. */
function losingSecondMessage(conn: NatsConnection): NatsConnection {
  return new Proxy(conn, {
    get(target, key) {
      if (key === "subscribe") {
        return (subject: string, opts: { callback: (err: Error | null, msg: unknown) => void }) => {
          let n = 0;
          return target.subscribe(subject, { ...opts, callback: (err, msg) => (++n === 2 ? undefined : opts.callback(err, msg)) });
        };
      }
      const v = Reflect.get(target, key) as unknown;
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

test("a receiver that misses a live notification catches up from the stream, in order, once", async () => {
  const names = gatewayNames(prefix);
  const store = await ensureGatewayStore(nc, names, { notifyKeepPerUser: 100 });
  const log = createLogger("silent");
  const publisher = createNotifications(nc, jetstream(nc), store.jsm, names, log);
  const receiver = createNotifications(losingSecondMessage(nc), jetstream(nc), store.jsm, names, log);
  const user = newUser();
  const got: Notification[] = [];
  const attachment = await receiver.attach(user, { after: 0n, strict: false, deliver: (n) => got.push(n), fail: (e) => assert.fail(e) });
  await attachment.start();
  const sent: Notification[] = [];
  for (const title of ["first", "second (lost live)", "third", "fourth"]) {
    sent.push(await publisher.publish({ userId: user, title, body: "", kind: "", data: undefined, idempotencyKey: "" }));
  }
  await eventually(() => got.length === 4, 10_000, "four notifications");
  assert.deepEqual(got.map((n) => n.sequence), sent.map((n) => n.sequence));
  assert.deepEqual(got.map((n) => n.title), ["first", "second (lost live)", "third", "fourth"]);
  attachment.detach();
  publisher.stop();
  receiver.stop();
});

// ---- The cursor alone (no server): exactly once, in order, gaps caught up.

function note(sequence: number, previous: number): Notification {
  const n = newNotification({ userId: "u", title: `n${sequence}`, body: "", kind: "", data: undefined, idempotencyKey: "" }, BigInt(previous), `id${sequence}`);
  n.sequence = BigInt(sequence);
  return n;
}

test("a cursor delivers live notifications in order and once; a gap is fetched before what follows it", async () => {
  const stored = new Map([1, 2, 3, 4, 5].map((s) => [s, note(s, s - 1)]));
  const delivered: number[] = [];
  let fetches = 0;
  const cursor = new Cursor(1n, { deliver: (n) => delivered.push(Number(n.sequence)), fail: (e) => assert.fail(e) }, async (c) => {
    fetches++;
    for (let s = Number(c.last) + 1; stored.has(s); s++) {
      if (s > 3) return; // the store catches up to 3 here; 4 and 5 arrive live
      c.push(stored.get(s)!);
    }
  });
  cursor.offer(stored.get(2)!); // buffered: the cursor has not started
  await cursor.run();
  assert.deepEqual(delivered, [2, 3]);
  cursor.offer(stored.get(3)!); // a repeat: dropped
  cursor.offer(stored.get(5)!); // previous 4 > last 3: a gap, caught up from the store first
  await new Promise((r) => setImmediate(r));
  cursor.offer(stored.get(4)!);
  assert.deepEqual(delivered, [2, 3, 5]);
  assert.equal(fetches, 2);
});

test("idempotent repeats are recognised by content", () => {
  const input = { userId: "u", title: "t", body: "b", kind: "k", data: { a: 1 }, idempotencyKey: "key" };
  const stored = newNotification(input, 0n, "id");
  assert.equal(sameContent(stored, input, structBytes(input.data)), true);
  assert.equal(sameContent(stored, { ...input, body: "other" }, structBytes(input.data)), false);
  assert.equal(sameContent(stored, input, structBytes({ a: 2 })), false);
});
