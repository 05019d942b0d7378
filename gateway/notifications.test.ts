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
import { createNotifications } from "./notifications.js";
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
