/**
 * Notifications across two gateway processes and a real nats-server: Publish
 * (services only) reaches every connected device of the user on every
 * instance and every Subscribe stream, in order, once; a device or stream
 * that comes back within the retention window gets what it missed, in order,
 * once, and is told when some are no longer kept; List pages newest first.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Notification, SubscribeResponse } from "../../gen/switchyard/notify/v1/notify_pb.js";
import {
  codeOf,
  connectDevice,
  eventually,
  newUser,
  rpcClients,
  startGatewayFixture,
  type GatewayFixture,
  type GatewayProcess,
  type TestDevice,
  type TestKeys,
} from "./support.js";

const KEEP = 20;

/** The code an RPC failed with (the test fails if it succeeded). */
const rpcCode = async (p: Promise<unknown>): Promise<Code> => (await codeOf(p)).code;

const notificationsOf = (d: TestDevice): Notification[] =>
  d.frames.flatMap((f) => (f.frame.case === "notification" ? [f.frame.value] : []));

/** Reads a Subscribe stream into an array until aborted. */
function subscribe(client: ReturnType<typeof rpcClients>, afterSequence: bigint) {
  const ctl = new AbortController();
  const got: SubscribeResponse[] = [];
  const done = (async () => {
    try {
      for await (const m of client.notify.subscribe({ afterSequence }, { signal: ctl.signal })) got.push(m);
    } catch (err) {
      if (!ctl.signal.aborted) throw err;
    }
  })();
  return { got, notes: () => got.flatMap((m) => (m.event.case === "notification" ? [m.event.value] : [])), stop: () => (ctl.abort(), done) };
}

/** Asserts sequences increase and each previous_sequence names the one before. */
function assertChain(ns: Notification[], startPrevious: bigint): void {
  let prev = startPrevious;
  for (const n of ns) {
    assert.equal(n.previousSequence, prev, `notification ${n.sequence} follows ${prev}`);
    assert.ok(n.sequence > prev);
    prev = n.sequence;
  }
}

describe("notifications", () => {
  let fx: GatewayFixture;
  let keys: TestKeys;
  let a: GatewayProcess, b: GatewayProcess;
  let service: ReturnType<typeof rpcClients>;
  const device = (...args: Parameters<typeof connectDevice>) => fx.device(...args);
  const publish = (userId: string, title: string, extra: { idempotencyKey?: string; body?: string } = {}) =>
    service.notify.publish({ userId, title, kind: "agent.run_finished", data: { title }, ...extra }).then((r) => r.notification!);

  before(async () => {
    fx = await startGatewayFixture({ count: 2, env: { GATEWAY_NOTIFY_KEEP_PER_USER: String(KEEP) } });
    keys = fx.keys;
    [a, b] = fx.gateways as [GatewayProcess, GatewayProcess];
    service = rpcClients(a.baseUrl, await keys.mint("notifier", { roles: ["service"] }));
  });

  after(async () => {
    await fx?.close();
  });

  test("Publish reaches every device of the user on every instance and every Subscribe stream, in order, once", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    const onA = await device(a.port, { token, deviceId: "a" });
    const onB = await device(b.port, { token, deviceId: "b" });
    const stranger = await device(b.port, { token: await keys.mint(newUser()) });
    const browser = subscribe(rpcClients(b.baseUrl, token), 0n);
    await eventually(() => browser.got.some((m) => m.event.case === "heartbeat"), 10_000, "the stream's first heartbeat");
    const published: Notification[] = [];
    for (let i = 0; i < 5; i++) published.push(await publish(user, `n${i}`));
    assertChain(published, 0n);
    for (const [what, got] of [["device on A", () => notificationsOf(onA)], ["device on B", () => notificationsOf(onB)], ["stream", browser.notes]] as const) {
      await eventually(() => got().length >= 5, 10_000, `five notifications at the ${what}`);
      assert.deepEqual(got().map((n) => [n.sequence, n.title]), published.map((n) => [n.sequence, n.title]), what);
    }
    assert.equal(notificationsOf(stranger).length, 0, "other users get nothing");
    await browser.stop();
  });

  test("only services publish; bad input is refused; an idempotency key publishes once", async () => {
    const user = newUser();
    assert.equal(await rpcCode(rpcClients(a.baseUrl, await keys.mint(user)).notify.publish({ userId: user, title: "self" })), Code.PermissionDenied);
    assert.equal(await rpcCode(service.notify.publish({ userId: "*", title: "x" })), Code.InvalidArgument);
    assert.equal(await rpcCode(service.notify.publish({ userId: user, title: "" })), Code.InvalidArgument);
    assert.equal(await rpcCode(service.notify.publish({ userId: user, title: "big", data: { blob: "x".repeat(17_000) } })), Code.InvalidArgument);
    const first = await publish(user, "once", { idempotencyKey: "key-1" });
    const again = await publish(user, "once", { idempotencyKey: "key-1" });
    assert.equal(again.sequence, first.sequence);
    assert.equal(again.notificationId, first.notificationId);
    assert.equal(await rpcCode(publish(user, "different", { idempotencyKey: "key-1" })), Code.AlreadyExists);
    const list = await rpcClients(a.baseUrl, await keys.mint(user)).notify.list({});
    assert.equal(list.notifications.length, 1);
  });

  test("a device that reconnects within the retention window gets what it missed, in order, once", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    const d1 = await device(a.port, { token, deviceId: "d" });
    const n1 = await publish(user, "one");
    const n2 = await publish(user, "two");
    await eventually(() => notificationsOf(d1).length === 2, 10_000, "two notifications");
    d1.ws.close();
    await d1.closed;
    const missed = [await publish(user, "three"), await publish(user, "four"), await publish(user, "five")];
    const d2 = await device(b.port, { token, deviceId: "d", lastNotificationSequence: n2.sequence });
    const welcome = d2.frames[0]!;
    assert.ok(welcome.frame.case === "welcome");
    assert.equal(welcome.frame.value.latestNotificationSequence, missed[2]!.sequence);
    assert.equal(welcome.frame.value.replayTruncated, false);
    await eventually(() => notificationsOf(d2).length === 3, 10_000, "the replay");
    const live = await publish(user, "six");
    await eventually(() => notificationsOf(d2).length === 4, 10_000, "the live one");
    assert.deepEqual(notificationsOf(d2).map((n) => n.title), ["three", "four", "five", "six"]);
    assertChain(notificationsOf(d2), n2.sequence);
    assert.equal(notificationsOf(d2).at(-1)!.sequence, live.sequence);
    assert.ok(n1.sequence < n2.sequence);
  });

  test("a Subscribe stream resumes from after_sequence; one from beyond the latest is OUT_OF_RANGE", async () => {
    const user = newUser();
    const client = rpcClients(a.baseUrl, await keys.mint(user));
    const first = await publish(user, "a");
    const rest = [await publish(user, "b"), await publish(user, "c")];
    const s = subscribe(client, first.sequence);
    await eventually(() => s.got.some((m) => m.event.case === "heartbeat"), 10_000, "the end-of-replay heartbeat");
    const beat = s.got.find((m) => m.event.case === "heartbeat")!;
    assert.equal(beat.event.case === "heartbeat" && beat.event.value.latestSequence, rest[1]!.sequence);
    assert.deepEqual(s.got.slice(0, 2).map((m) => m.event.case === "notification" && m.event.value.title), ["b", "c"], "replay before the heartbeat");
    const live = await publish(user, "d");
    await eventually(() => s.notes().length === 3, 10_000, "the live notification");
    assert.equal(s.notes()[2]!.sequence, live.sequence);
    await s.stop();

    let code: Code | undefined;
    try {
      for await (const _ of client.notify.subscribe({ afterSequence: live.sequence + 1000n })) break;
    } catch (err) {
      code = ConnectError.from(err).code;
    }
    assert.equal(code, Code.OutOfRange);
  });

  test("a replay past the retention limit says so and delivers what is kept", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    const first = await publish(user, "0");
    for (let i = 1; i < KEEP + 5; i++) await publish(user, String(i));
    const d = await device(a.port, { token, lastNotificationSequence: first.sequence });
    const welcome = d.frames[0]!;
    assert.ok(welcome.frame.case === "welcome" && welcome.frame.value.replayTruncated);
    await eventually(() => notificationsOf(d).length === KEEP, 10_000, "the kept notifications");
    assert.deepEqual(notificationsOf(d).map((n) => n.title), Array.from({ length: KEEP }, (_, i) => String(i + 5)));
  });

  test("List pages newest first; a page token of another user is refused", async () => {
    const user = newUser();
    const client = rpcClients(b.baseUrl, await keys.mint(user));
    for (let i = 0; i < 7; i++) await publish(user, `p${i}`);
    const titles: string[] = [];
    let pageToken = "";
    do {
      const page = await client.notify.list({ pageSize: 3, pageToken });
      titles.push(...page.notifications.map((n) => n.title));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.deepEqual(titles, ["p6", "p5", "p4", "p3", "p2", "p1", "p0"]);
    const page1 = await client.notify.list({ pageSize: 2 });
    const other = rpcClients(b.baseUrl, await keys.mint(newUser()));
    assert.equal(await rpcCode(other.notify.list({ pageToken: page1.nextPageToken })), Code.InvalidArgument);
    assert.equal(await rpcCode(client.notify.list({ pageToken: "garbage" })), Code.InvalidArgument);
  });
});
