/**
 * nats-server killed and restarted (same store) while tool calls flow
 * between two gateway processes: every call completes or fails cleanly
 * (UNAVAILABLE or DEADLINE_EXCEEDED) no later than its deadline allows, no
 * call runs twice, and the gateways recover by themselves: calls succeed
 * again, the device is still listed, notifications flow again.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startNats, type OwnNats } from "../support/infra.js";
import {
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

const CALL_TIMEOUT_MS = 1500;
/**
 * The client waits this much longer than the call's own deadline. A call that
 * hung would end there, failed by the client ("the operation timed out");
 * every call must instead end with the gateway's own answer. No clock is
 * compared, so a loaded machine cannot fail the test.
 */
const CLIENT_MARGIN_MS = 10_000;

let fx: GatewayFixture;
let keys: TestKeys;
let nats: OwnNats;
let a: GatewayProcess, b: GatewayProcess;
let d: TestDevice | undefined;

before(async () => {
  nats = await startNats();
  fx = await startGatewayFixture({ count: 2, nats: nats.url });
  keys = fx.keys;
  [a, b] = fx.gateways as [GatewayProcess, GatewayProcess];
});

after(async () => {
  d?.ws.terminate();
  await fx?.close();
  await nats?.kill();
});

test("nats-server restarted mid-traffic: calls fail cleanly or complete, none hangs, the gateways recover", async () => {
  const user = newUser();
  const runs = new Map<string, number>();
  d = await connectDevice(b.port, {
    token: await keys.mint(user),
    deviceId: "steady",
    onCall: (call) => {
      runs.set(call.callId, (runs.get(call.callId) ?? 0) + 1);
      return { ok: call.callId };
    },
  });
  const agent = rpcClients(a.baseUrl, await keys.mint("agent-runner", { roles: ["service"] }));
  const outcomes: { ok: boolean; code?: Code; message?: string; ms: number; at: number }[] = [];
  let stop = false;
  let n = 0;
  const worker = async () => {
    while (!stop) {
      const callId = `c${n++}`;
      const t0 = Date.now();
      try {
        await agent.devices.callTool({ userId: user, tool: "echo", callId, timeout: { nanos: CALL_TIMEOUT_MS * 1e6 } }, { timeoutMs: CALL_TIMEOUT_MS + CLIENT_MARGIN_MS });
        outcomes.push({ ok: true, ms: Date.now() - t0, at: Date.now() });
      } catch (err) {
        const e = ConnectError.from(err);
        outcomes.push({ ok: false, code: e.code, message: e.rawMessage, ms: Date.now() - t0, at: Date.now() });
        await new Promise((r) => setTimeout(r, 50)); // a failing caller backs off a little
      }
    }
  };
  const workers = Array.from({ length: 4 }, worker);
  try {
    await eventually(() => outcomes.filter((o) => o.ok).length >= 20, 20_000, "calls to flow before the restart");
    await nats.kill("SIGKILL");
    const killedAt = Date.now();
    await eventually(() => outcomes.some((o) => !o.ok && o.at > killedAt), 20_000, "calls to fail while NATS is down");
    await nats.start();
    const restartedAt = Date.now();
    await eventually(() => outcomes.filter((o) => o.ok && o.at > restartedAt).length >= 20, 30_000, "calls to succeed again after the restart");
  } finally {
    stop = true;
    await Promise.all(workers);
  }

  const failures = outcomes.filter((o) => !o.ok);
  assert.ok(failures.length > 0);
  for (const f of failures) assert.ok(f.code === Code.Unavailable || f.code === Code.DeadlineExceeded, `clean failure code, got ${Code[f.code!]}`);
  for (const f of failures) assert.doesNotMatch(f.message ?? "", /the operation timed out/, `a call hung until the client gave up (${f.ms} ms)`);
  for (const [callId, count] of runs) assert.equal(count, 1, `call ${callId} ran ${count} times`);

  // Recovered without a restart: presence and notifications work too.
  const list = await agent.devices.listDevices({ userId: user });
  assert.deepEqual(list.devices.map((x) => [x.deviceId, x.gatewayInstance]), [["steady", b.instanceId]]);
  const notifier = rpcClients(a.baseUrl, await keys.mint("notifier", { roles: ["service"] }));
  const sent = await notifier.notify.publish({ userId: user, title: "back" });
  await d.waitFor((f) => f.frame.case === "notification" && f.frame.value.sequence === sent.notification!.sequence, 10_000, "a notification after the restart");
});
