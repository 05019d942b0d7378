/**
 * Cross-instance tool calls with a real nats-server and three gateway
 * processes (SERVICES=gateway): a call made on A runs on a device held by B;
 * with several devices, retries and reconnects it runs once; a device or a
 * gateway that goes away mid-call fails the call at once with UNAVAILABLE;
 * "no device" is UNAVAILABLE without waiting; wait_for_device delivers before
 * the deadline and never after; per-user backpressure answers
 * RESOURCE_EXHAUSTED; results count only from the connection the call went to.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DeviceFrameSchema, ToolCallSchema } from "../../gen/switchyard/device/v1/device_frame_pb.js";
import { GatewayControlSchema, RelayedToolCallSchema } from "../../gen/switchyard/device/v1/relay_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { toBinary } from "@bufbuild/protobuf";
import { headers } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { gatewayNames } from "../../gateway/subjects.js";
import {
  codeOf,
  connectDevice,
  eventually,
  newUser,
  rpcClients,
  startGateway,
  startGatewayFixture,
  type GatewayFixture,
  type GatewayProcess,
  type TestDevice,
  type TestKeys,
} from "./support.js";

const HEARTBEAT_MS = 1000;

/** gateway_tool_calls_pending on the instance at `baseUrl`. */
async function pendingCalls(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  return Number(/^gateway_tool_calls_pending (\d+)/m.exec(text)?.[1] ?? 0);
}
const CAP = 4;


describe("tool calls across gateway instances", () => {
  let fx: GatewayFixture;
  let keys: TestKeys;
  let nats: string;
  let prefix: string;
  let a: GatewayProcess, b: GatewayProcess, c: GatewayProcess;
  let agent: ReturnType<typeof rpcClients>;
  let agentOnB: ReturnType<typeof rpcClients>;
  const device = (...args: Parameters<typeof connectDevice>) => fx.device(...args);

  before(async () => {
    fx = await startGatewayFixture({
      count: 3,
      env: { GATEWAY_HEARTBEAT_MS: String(HEARTBEAT_MS), GATEWAY_MAX_PENDING_CALLS_PER_USER: String(CAP) },
    });
    ({ keys, nats, prefix } = fx);
    [a, b, c] = fx.gateways as [GatewayProcess, GatewayProcess, GatewayProcess];
    agent = await fx.service(0);
    agentOnB = await fx.service(1);
  });

  after(async () => {
    await fx?.close();
  });

  test("a call made on A reaches the device held by B and returns its result", async () => {
    const user = newUser();
    const d = await device(b.port, { token: await keys.mint(user), onCall: (call) => ({ echoed: call.arguments ?? {}, tool: call.tool }) });
    const res = await agent.devices.callTool({ userId: user, tool: "echo", arguments: { text: "hi", n: 2 }, callId: "call-one" });
    assert.equal(res.callId, "call-one");
    assert.equal(res.outcome.case, "result");
    assert.deepEqual(res.outcome.value, { echoed: { text: "hi", n: 2 }, tool: "echo" });
    assert.equal(d.calls.length, 1);
    assert.ok(d.calls[0]!.deadline, "the deadline travels with the call");

    const list = await agent.devices.listDevices({ userId: user });
    assert.equal(list.devices.length, 1);
    assert.equal(list.devices[0]!.gatewayInstance, b.instanceId, "ListDevices says where the device is");
  });

  test("the user's own token may call only their own devices", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    await device(b.port, { token, onCall: () => ({ ok: true }) });
    const own = rpcClients(a.baseUrl, token);
    const res = await own.devices.callTool({ tool: "echo" });
    assert.deepEqual(res.outcome.value, { ok: true });
    const other = await codeOf(own.devices.callTool({ userId: newUser(), tool: "echo" }));
    assert.equal(other.code, Code.PermissionDenied);
    const needsUser = await codeOf(agent.devices.callTool({ tool: "echo" }));
    assert.equal(needsUser.code, Code.InvalidArgument, "a service must name the user");
    for (const [what, bad] of [
      ["negative timeout", { tool: "echo", timeout: { seconds: -1n } }],
      ["timeout over 300 s", { tool: "echo", timeout: { seconds: 301n } }],
      ["bad tool name", { tool: "Not A Tool" }],
      ["bad call id", { tool: "echo", callId: "a.b" }],
      ["keep_running without a call id", { tool: "echo", keepRunning: true }],
      ["arguments over 256 KiB", { tool: "echo", arguments: { blob: "x".repeat(300 * 1024) } }],
    ] as const) {
      assert.equal((await codeOf(own.devices.callTool(bad))).code, Code.InvalidArgument, what);
    }
    assert.equal((await codeOf(own.devices.cancelToolCall({ userId: newUser(), callId: "x" }))).code, Code.PermissionDenied);
    assert.equal((await codeOf(own.devices.cancelToolCall({}))).code, Code.InvalidArgument, "a call id is required");
  });

  test("keep_running: a call whose caller went away runs on, and a retry on another instance gets its real outcome; CancelToolCall stops one", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const d = await device(c.port, { token, onCall: async (call) => (await released, { ran: call.callId }) });
    // The caller on A gives up (as a dying server's RPC does) while the device holds the call.
    const gone = new AbortController();
    const first = codeOf(agent.devices.callTool({ userId: user, tool: "echo", callId: "outlives", keepRunning: true }, { signal: gone.signal }));
    await eventually(() => d.calls.length === 1, 10_000, "the device to receive the call");
    gone.abort();
    assert.equal((await first).code, Code.Canceled);
    // Still pending on A until the device answers; no cancel went to the device.
    await eventually(async () => (await pendingCalls(a.baseUrl)) === 1, 10_000, "A to hold the call");
    const retry = agentOnB.devices.callTool({ userId: user, tool: "echo", callId: "outlives", keepRunning: true });
    release();
    assert.deepEqual((await retry).outcome.value, { ran: "outlives" });
    assert.equal(d.calls.length, 1, "the call ran once");
    assert.ok(!d.frames.some((f) => f.frame.case === "cancelToolCall"), "the device was never told to cancel");

    // A held call cancelled from another instance: the device is told, the caller gets CANCELLED, and so does a retry.
    const d2 = await device(c.port, { token, deviceId: "held", onCall: () => undefined });
    const held = codeOf(agent.devices.callTool({ userId: user, deviceId: "held", tool: "echo", callId: "stopped", keepRunning: true }));
    await eventually(() => d2.calls.length === 1, 10_000, "the device to receive the call");
    await agentOnB.devices.cancelToolCall({ userId: user, callId: "stopped", reason: "no longer needed" });
    assert.equal((await held).code, Code.Canceled);
    const told = await d2.waitFor((f) => f.frame.case === "cancelToolCall", 10_000, "the cancel");
    assert.equal((told.frame.value as { reason: string }).reason, "no longer needed");
    const again = await codeOf(agentOnB.devices.callTool({ userId: user, deviceId: "held", tool: "echo", callId: "stopped", keepRunning: true }));
    assert.equal(again.code, Code.Canceled);
    assert.equal(d2.calls.length, 1);
  });

  test("with two devices of one user on two instances each call runs exactly once, retries included", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    const onCall = (call: { callId: string }) => ({ ran: call.callId });
    const d1 = await device(a.port, { token, deviceId: "laptop", onCall });
    const d2 = await device(b.port, { token, deviceId: "phone", onCall });
    for (let i = 0; i < 10; i++) {
      const via = i % 2 === 0 ? agent : agentOnB;
      const res = await via.devices.callTool({ userId: user, tool: "echo", callId: `once-${i}` });
      assert.deepEqual(res.outcome.value, { ran: `once-${i}` });
    }
    // The same call_id on two instances at once: one runs, both get its outcome.
    const [r1, r2] = await Promise.all([
      agent.devices.callTool({ userId: user, tool: "echo", callId: "twice", arguments: { k: 1 } }),
      agentOnB.devices.callTool({ userId: user, tool: "echo", callId: "twice", arguments: { k: 1 } }),
    ]);
    assert.deepEqual(r1.outcome.value, { ran: "twice" });
    assert.deepEqual(r2.outcome.value, { ran: "twice" });
    assert.equal(r1.deviceId, r2.deviceId);
    // A retry after it finished returns the recorded outcome without running it again.
    const r3 = await agentOnB.devices.callTool({ userId: user, tool: "echo", callId: "twice", arguments: { k: 1 } });
    assert.deepEqual(r3.outcome.value, { ran: "twice" });
    // The same call_id with other arguments is refused.
    const clash = await codeOf(agent.devices.callTool({ userId: user, tool: "echo", callId: "twice", arguments: { k: 2 } }));
    assert.equal(clash.code, Code.AlreadyExists);

    const ran = [...d1.calls, ...d2.calls].map((c) => c.callId).sort();
    assert.deepEqual(ran, [...Array.from({ length: 10 }, (_, i) => `once-${i}`), "twice"].sort(), "every call ran on exactly one device, once");
    // The most recently connected device offering the tool is chosen.
    assert.equal(d2.calls.length, 11);

    // ListDevices pages by device_id.
    const page1 = await agent.devices.listDevices({ userId: user, pageSize: 1 });
    assert.deepEqual(page1.devices.map((x) => [x.deviceId, x.gatewayInstance]), [["laptop", a.instanceId]]);
    const page2 = await agent.devices.listDevices({ userId: user, pageSize: 1, pageToken: page1.nextPageToken });
    assert.deepEqual(page2.devices.map((x) => [x.deviceId, x.gatewayInstance]), [["phone", b.instanceId]]);
    assert.equal(page2.nextPageToken, "");
    const foreign = await codeOf(agent.devices.listDevices({ userId: newUser(), pageToken: page1.nextPageToken }));
    assert.equal(foreign.code, Code.InvalidArgument);
  });

  test("no device online: UNAVAILABLE at once; devices without the tool: FAILED_PRECONDITION", async () => {
    const user = newUser();
    const none = await codeOf(agent.devices.callTool({ userId: user, tool: "echo", timeout: { seconds: 60n } }));
    assert.equal(none.code, Code.Unavailable);
    assert.match(none.message, /no device of the user is connected/);
    await device(b.port, { token: await keys.mint(user), tools: ["other.tool"] });
    const noTool = await codeOf(agent.devices.callTool({ userId: user, tool: "echo" }));
    assert.equal(noTool.code, Code.FailedPrecondition);
    const named = await codeOf(agent.devices.callTool({ userId: user, deviceId: "absent", tool: "other.tool" }));
    assert.equal(named.code, Code.Unavailable);
  });

  test("wait_for_device: delivered when the device connects before the deadline", async () => {
    const user = newUser();
    const pending = agent.devices.callTool({ userId: user, tool: "echo", waitForDevice: true, timeout: { seconds: 20n }, callId: "waited" });
    // The call is waiting on A once A counts it pending (it listens for the user's devices before it reads them).
    await eventually(async () => (await pendingCalls(a.baseUrl)) >= 1, 20_000, "the call to wait on A");
    const d = await device(b.port, { token: await keys.mint(user), onCall: () => ({ late: false }) });
    const res = await pending;
    assert.deepEqual(res.outcome.value, { late: false });
    assert.deepEqual(d.calls.map((c) => c.callId), ["waited"]);
  });

  test("wait_for_device: a call whose deadline passed is never delivered", async () => {
    const user = newUser();
    const expired = await codeOf(agent.devices.callTool({ userId: user, tool: "echo", waitForDevice: true, timeout: { nanos: 400_000_000 }, callId: "expired" }));
    assert.equal(expired.code, Code.Unavailable);
    assert.match(expired.message, /before the deadline/);
    const d = await device(b.port, { token: await keys.mint(user), onCall: () => ({ ok: 1 }) });
    await agent.devices.callTool({ userId: user, tool: "echo", callId: "after" }); // a sync point: later traffic arrived
    assert.deepEqual(d.calls.map((c) => c.callId), ["after"]);
  });

  test("a device socket destroyed mid-call fails the call at once with UNAVAILABLE, and a retry does not run it", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    const d = await device(b.port, { token, deviceId: "flaky", onCall: () => undefined });
    const pending = codeOf(agent.devices.callTool({ userId: user, tool: "echo", callId: "cut", timeout: { seconds: 120n } }, { timeoutMs: 120_000 }));
    await d.waitFor((f) => f.frame.case === "toolCall", 10_000, "the tool call");
    (d.ws as unknown as { _socket: { destroy(): void } })._socket.destroy();
    const failed = await pending;
    assert.equal(failed.code, Code.Unavailable, "not a timeout: the gateway saw the disconnect");
    assert.match(failed.message, /disconnected/);

    const again = await device(a.port, { token, deviceId: "flaky", onCall: () => ({ ran: true }) });
    const retry = await codeOf(agent.devices.callTool({ userId: user, tool: "echo", callId: "cut" }));
    assert.equal(retry.code, Code.Unavailable, "the recorded outcome, not a second run");
    await agent.devices.callTool({ userId: user, tool: "echo", callId: "fresh" });
    assert.deepEqual(again.calls.map((c) => c.callId), ["fresh"]);
  });

  test("per-user backpressure: too many waiting calls answer RESOURCE_EXHAUSTED and none is dropped", async () => {
    const user = newUser();
    const d = await device(b.port, { token: await keys.mint(user), onCall: () => undefined });
    const held = Array.from({ length: CAP }, (_, i) => agent.devices.callTool({ userId: user, tool: "echo", callId: `held-${i}` }));
    await eventually(() => d.calls.length === CAP, 10_000, "the held calls to reach the device");
    const over = await codeOf(agent.devices.callTool({ userId: user, tool: "echo", callId: "one-too-many" }));
    assert.equal(over.code, Code.ResourceExhausted);
    for (const call of d.calls) d.answer(call.callId, { done: call.callId });
    const results = await Promise.all(held);
    assert.deepEqual(results.map((r) => r.outcome.value), Array.from({ length: CAP }, (_, i) => ({ done: `held-${i}` })));
    // The refused call was not recorded: a retry with its call_id runs.
    const later = agent.devices.callTool({ userId: user, tool: "echo", callId: "one-too-many" });
    await eventually(() => d.calls.some((x) => x.callId === "one-too-many"), 10_000, "the retried call to reach the device");
    d.answer("one-too-many", { done: "retried" });
    assert.deepEqual((await later).outcome.value, { done: "retried" });
  });

  test("results count only from the connection the call was sent to", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    const holder = await device(b.port, { token, deviceId: "holder", onCall: () => undefined });
    const pending = agent.devices.callTool({ userId: user, tool: "echo", callId: "mine", deviceId: "holder" });
    await holder.waitFor((f) => f.frame.case === "toolCall", 10_000, "the tool call");
    const sameUser = await device(a.port, { token, deviceId: "intruder" });
    const stranger = await device(b.port, { token: await keys.mint(newUser()), deviceId: "stranger" });
    for (const [d, callId] of [[sameUser, "mine"], [stranger, "mine"], [sameUser, "never-sent"]] as const) {
      d.answer(callId, { forged: true });
      const err = await d.waitFor((f) => f.frame.case === "error" && f.frame.value.callId === callId, 10_000, "a NOT_FOUND error");
      assert.equal(err.frame.case === "error" && err.frame.value.code, Code.NotFound);
      assert.equal(err.frame.case === "error" && err.frame.value.fatal, false);
    }
    holder.answer("mine", { genuine: true });
    const res = await pending;
    assert.deepEqual(res.outcome.value, { genuine: true });
    // A second answer from the right connection is refused too (once per call).
    holder.answer("mine", { again: true });
    await holder.waitFor((f) => f.frame.case === "error" && f.frame.value.callId === "mine", 10_000, "a NOT_FOUND error");
  });

  test("a cancel that reaches the holder before its call (caller gave up just after publishing) keeps the call from the device", async () => {
    // A caller instance sends the cancel on a core subject and the call through
    // the stream's RePublish, so the holder can get them in this order; here a
    // test client plays the caller instance and sends them so.
    const user = newUser();
    const d = await device(b.port, { token: await keys.mint(user), deviceId: "quick", onCall: (call) => ({ ran: call.callId }) });
    const welcome = d.frames.find((f) => f.frame.case === "welcome")!;
    const sessionId = welcome.frame.case === "welcome" ? welcome.frame.value.sessionId : assert.fail();
    const names = gatewayNames(prefix);
    const deadline = Date.now() + 60_000;
    const nc = await connect({ servers: nats });
    try {
      const cancel = create(GatewayControlSchema, { command: { case: "cancel", value: { callId: "given-up", sessionId, reason: "the caller gave up", deadlineMs: BigInt(deadline) } } });
      nc.publish(names.control(b.instanceId), toBinary(GatewayControlSchema, cancel));
      const call = create(RelayedToolCallSchema, {
        userId: user,
        deviceId: "quick",
        sessionId,
        replyInstance: a.instanceId,
        callId: "given-up",
        deadlineMs: BigInt(deadline),
        toolCall: toBinary(ToolCallSchema, create(ToolCallSchema, { callId: "given-up", tool: "echo", deadline: timestampFromMs(deadline) })),
      });
      const h = headers();
      h.set("Nats-Msg-Id", "given-up");
      nc.publish(names.call(user, b.instanceId), toBinary(RelayedToolCallSchema, call), { headers: h });
      await nc.flush();
    } finally {
      await nc.close();
    }
    // A later call on the same connection is the sync point: the earlier one had its chance.
    await agent.devices.callTool({ userId: user, tool: "echo", callId: "later" });
    assert.deepEqual(d.calls.map((c) => c.callId), ["later"], "the given-up call never reached the device");
  });

  test("a tool error from the device is an outcome, not an RPC error", async () => {
    const user = newUser();
    const d = await device(b.port, { token: await keys.mint(user), onCall: () => undefined });
    const pending = agent.devices.callTool({ userId: user, tool: "echo", callId: "fails" });
    await d.waitFor((f) => f.frame.case === "toolCall", 10_000, "the tool call");
    d.send(create(DeviceFrameSchema, { frame: { case: "toolResult", value: { callId: "fails", outcome: { case: "error", value: { code: 3, message: "user said no" } } } } }));
    const res = await pending;
    assert.equal(res.outcome.case, "error");
    assert.equal(res.outcome.value?.message, "user said no");
  });

  test("a gateway stopped with SIGTERM tells its devices to reconnect, fails its calls at once and leaves presence", async () => {
    const d = await startGateway({
      NATS_URL: nats,
      AUTH_JWKS_URL: keys.jwksUrl,
      GATEWAY_NATS_PREFIX: prefix,
      GATEWAY_HEARTBEAT_MS: String(HEARTBEAT_MS),
    });
    try {
      const user = newUser();
      const dev = await connectDevice(d.port, { token: await keys.mint(user), onCall: () => undefined });
      const pending = codeOf(agent.devices.callTool({ userId: user, tool: "echo", timeout: { seconds: 120n } }, { timeoutMs: 120_000 }));
      await dev.waitFor((f) => f.frame.case === "toolCall", 10_000, "the tool call");
      d.child.kill("SIGTERM");
      const bye = await dev.waitFor((f) => f.frame.case === "error" && f.frame.value.fatal, 10_000, "the goodbye");
      assert.equal(bye.frame.case === "error" && bye.frame.value.code, Code.Unavailable);
      assert.equal(await dev.closed, 4000 + Code.Unavailable);
      assert.equal((await pending).code, Code.Unavailable);
      await eventually(async () => (await agent.devices.listDevices({ userId: user })).devices.length === 0, 5_000, "the device to leave presence");
    } finally {
      await d.kill("SIGKILL");
    }
  });

  test("gateway C killed with SIGKILL mid-call: UNAVAILABLE within a few seconds, presence follows, and the call never runs twice", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    const d = await device(c.port, { token, deviceId: "desk", onCall: () => undefined });
    const pending = codeOf(agent.devices.callTool({ userId: user, tool: "echo", callId: "orphan", timeout: { seconds: 120n } }, { timeoutMs: 120_000 }));
    await d.waitFor((f) => f.frame.case === "toolCall", 10_000, "the tool call");
    await c.kill("SIGKILL");
    const failed = await pending;
    assert.equal(failed.code, Code.Unavailable, "the caller learns from the missing heartbeats, not from a timeout");
    assert.match(failed.message, /stopped/);

    // Presence drops the dead instance's device within one heartbeat interval (bounded wait).
    await eventually(async () => (await agent.devices.listDevices({ userId: user })).devices.length === 0, 3 * HEARTBEAT_MS, "the device to leave presence");

    // The device reconnects to A; the caller retries the same call id: not executed again.
    const back = await device(a.port, { token, deviceId: "desk", onCall: () => ({ ran: true }) });
    const retry = await codeOf(agent.devices.callTool({ userId: user, tool: "echo", callId: "orphan" }));
    assert.equal(retry.code, Code.Unavailable);
    await agentOnB.devices.callTool({ userId: user, tool: "echo", callId: "after-kill" });
    assert.deepEqual(back.calls.map((x) => x.callId), ["after-kill"]);
    const list = await agent.devices.listDevices({ userId: user });
    assert.deepEqual(list.devices.map((x) => [x.deviceId, x.gatewayInstance]), [["desk", a.instanceId]]);
  });
});
