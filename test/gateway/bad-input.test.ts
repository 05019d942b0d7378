/**
 * The device WebSocket and DeviceService against bad input, with two gateway
 * processes and a real nats-server: refused upgrades (no token, expired token,
 * wrong Origin, no subprotocol, a service token, reused or mismatched
 * tickets), bad frames (over maxPayload, undecodable, wrong kind, wrong
 * direction, bad hello), user ids that would widen a subject, more
 * connections than the cap, ping floods, credential expiry, dead and slow
 * peers; and the JSON subprotocol working end to end.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { decodeJwt } from "jose";
import { WebSocket } from "ws";
import { DeviceFrameSchema } from "../../gen/switchyard/device/v1/device_frame_pb.js";
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

const HEARTBEAT_MS = 1000;
const MAX_FRAME = 4096;
const CONN_CAP = 2;
const FPS = 20;
const ORIGIN = "https://console.example.com";

async function refusal(p: Promise<unknown>): Promise<{ status: number; body: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { status?: number; body?: string };
    if (e.status !== undefined) return { status: e.status, body: e.body ?? "" };
    throw err;
  }
  assert.fail("expected the upgrade to be refused");
}

/** The code an RPC failed with (the test fails if it succeeded). */
const rpcCode = async (p: Promise<unknown>): Promise<Code> => (await codeOf(p)).code;

const errorFrame = (d: TestDevice, fatal: boolean) =>
  d.waitFor((f) => f.frame.case === "error" && f.frame.value.fatal === fatal, 10_000, `a ${fatal ? "fatal" : "non-fatal"} error`).then((f) =>
    f.frame.case === "error" ? f.frame.value : assert.fail(),
  );

describe("gateway bad input", () => {
  let fx: GatewayFixture;
  let keys: TestKeys;
  let a: GatewayProcess, b: GatewayProcess;
  let agent: ReturnType<typeof rpcClients>;
  let open: TestDevice[];
  const tickets: string[] = [];
  const device = (...args: Parameters<typeof connectDevice>) => fx.device(...args);

  before(async () => {
    const env = {
      GATEWAY_HEARTBEAT_MS: String(HEARTBEAT_MS),
      GATEWAY_MAX_FRAME_BYTES: String(MAX_FRAME),
      GATEWAY_MAX_CONNECTIONS_PER_USER: String(CONN_CAP),
      GATEWAY_MAX_FRAMES_PER_SECOND: String(FPS),
      GATEWAY_MAX_SEND_BUFFER_BYTES: String(64 * 1024),
      GATEWAY_ALLOWED_ORIGINS: ORIGIN,
      LOG_LEVEL: "debug", // the most the gateways say, for the secrets check at the end
    };
    fx = await startGatewayFixture({ count: 2, env });
    ({ keys, devices: open } = fx);
    [a, b] = fx.gateways as [GatewayProcess, GatewayProcess];
    agent = await fx.service(0);
  });

  after(async () => {
    await fx?.close();
  });

  describe("the upgrade", () => {
    test("no token: 401", async () => {
      const r = await refusal(connectDevice(a.port, {}));
      assert.equal(r.status, 401);
    });

    test("an expired token, a malformed token and a service token are refused", async () => {
      assert.equal((await refusal(connectDevice(a.port, { token: await keys.mint(newUser(), { ttlS: -120 }) }))).status, 401);
      assert.equal((await refusal(connectDevice(a.port, { token: "not.a.jwt" }))).status, 401);
      assert.equal((await refusal(connectDevice(a.port, { token: await keys.mint("svc", { roles: ["service"] }) }))).status, 403);
    });

    test("an Origin outside the allowlist: 403; an allowed one and none (native apps) pass", async () => {
      const token = await keys.mint(newUser());
      const r = await refusal(connectDevice(a.port, { token, origin: "https://evil.example" }));
      assert.equal(r.status, 403);
      await device(a.port, { token, origin: ORIGIN });
      await device(a.port, { token });
    });

    test("one bearer grammar: two spaces after Bearer are accepted on the upgrade and on RPCs alike; another scheme is refused", async () => {
      const token = await keys.mint(newUser());
      await device(a.port, { token: ` ${token}` }); // "Bearer  <token>"
      const rpcs = rpcClients(a.baseUrl, ` ${token}`);
      assert.deepEqual((await rpcs.devices.listDevices({})).devices.length, 1);
      const ws = new WebSocket(`ws://127.0.0.1:${a.port}/ws/device`, ["switchyard.device.v1+proto"], { headers: { authorization: `Token ${token}` } });
      const status = await new Promise<number | undefined>((resolve) => (ws.once("unexpected-response", (_q, res) => resolve(res.statusCode)), ws.once("open", () => resolve(undefined))));
      ws.on("error", () => {});
      ws.terminate();
      assert.equal(status, 401);
    });

    test("no known subprotocol: 400", async () => {
      const r = await refusal(connectDevice(a.port, { token: await keys.mint(newUser()), protocol: "chat" }));
      assert.equal(r.status, 400);
    });

    test("tickets: single use, any instance, never with another user's token; services get none", async () => {
      const user = newUser();
      const userToken = await keys.mint(user);
      const { ticket, expireTime } = await rpcClients(a.baseUrl, userToken).devices.issueDeviceTicket({});
      const answeredAt = Date.now(); // after the server chose the expiry: a bound, not a timing
      tickets.push(ticket);
      assert.ok(Number(expireTime!.seconds) * 1000 <= answeredAt + 30_000 + 1000, "a ticket lives at most 30 s");
      const d = await device(b.port, { ticket }); // issued on A, redeemed on B
      assert.equal(d.frames[0]!.frame.case, "welcome");
      assert.equal((await refusal(connectDevice(a.port, { ticket }))).status, 401, "a ticket opens one connection");

      const second = (await rpcClients(a.baseUrl, userToken).devices.issueDeviceTicket({})).ticket;
      tickets.push(second);
      const otherToken = await keys.mint(newUser());
      assert.equal((await refusal(connectDevice(a.port, { ticket: second, token: otherToken }))).status, 401, "ticket and token of different users");
      assert.equal((await refusal(connectDevice(a.port, { ticket: "x".repeat(43) }))).status, 401);
      assert.equal(await rpcCode(agent.devices.issueDeviceTicket({})), Code.PermissionDenied);
    });

    test("a ticket expires with the token that issued it", async () => {
      const short = await keys.mint(newUser(), { ttlS: 2 });
      const { ticket, expireTime } = await rpcClients(a.baseUrl, short).devices.issueDeviceTicket({});
      tickets.push(ticket);
      const expiresAt = Number(expireTime!.seconds) * 1000 + Math.floor(expireTime!.nanos / 1e6);
      assert.ok(expiresAt <= decodeJwt(short).exp! * 1000, "the ticket outlives its token");
      await new Promise((r) => setTimeout(r, Math.max(0, expiresAt - Date.now()) + 50)); // a known instant, not a guess
      assert.equal((await refusal(connectDevice(b.port, { ticket }))).status, 401);
    });

    test("another user's token in reauthenticate closes the connection UNAUTHENTICATED", async () => {
      const user = newUser();
      const { ticket } = await rpcClients(a.baseUrl, await keys.mint(user)).devices.issueDeviceTicket({});
      tickets.push(ticket);
      const d = await device(a.port, { ticket });
      d.send(create(DeviceFrameSchema, { frame: { case: "reauthenticate", value: { accessToken: await keys.mint(newUser()) } } }));
      const e = await errorFrame(d, true);
      assert.equal(e.code, Code.Unauthenticated);
      assert.equal(await d.closed, 4000 + Code.Unauthenticated);
    });
  });

  describe("frames", () => {
    test("a frame over maxPayload closes the socket with 1009", async () => {
      const d = await device(a.port, { token: await keys.mint(newUser()) });
      d.send(new Uint8Array(MAX_FRAME + 1));
      assert.equal(await d.closed, 1009);
    });

    test("an undecodable protobuf frame is fatal INVALID_ARGUMENT", async () => {
      const d = await device(a.port, { token: await keys.mint(newUser()) });
      d.send(Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]));
      assert.equal((await errorFrame(d, true)).code, Code.InvalidArgument);
      assert.equal(await d.closed, 4000 + Code.InvalidArgument);
    });

    test("an undecodable tool_result for a pending call is fatal INVALID_ARGUMENT, and the caller gets UNAVAILABLE", async () => {
      const user = newUser();
      const d = await device(b.port, { token: await keys.mint(user), onCall: () => undefined });
      const pending = rpcCode(agent.devices.callTool({ userId: user, tool: "echo", callId: "garbled" }));
      await d.waitFor((f) => f.frame.case === "toolCall", 10_000, "the tool call");
      // tool_result { call_id: "garbled", result: <a Struct whose map entry claims 5 bytes and has 1> }
      const id = Buffer.from("garbled");
      const inner = Buffer.concat([Buffer.from([0x0a, id.length]), id, Buffer.from([0x12, 0x03, 0x0a, 0x05, 0x01])]);
      d.send(Buffer.concat([Buffer.from([0x22, inner.length]), inner]));
      assert.equal((await errorFrame(d, true)).code, Code.InvalidArgument);
      assert.equal(await d.closed, 4000 + Code.InvalidArgument);
      assert.equal(await pending, Code.Unavailable, "the device disconnected mid-call; no garbled outcome reaches the caller");
    });

    test("a text message under the binary subprotocol is fatal INVALID_ARGUMENT", async () => {
      const d = await device(a.port, { token: await keys.mint(newUser()) });
      d.send('{"ping":{}}');
      assert.equal((await errorFrame(d, true)).code, Code.InvalidArgument);
    });

    test("a first frame other than hello is fatal FAILED_PRECONDITION", async () => {
      const d = await device(a.port, { token: await keys.mint(newUser()), noHello: true });
      d.send(create(DeviceFrameSchema, { frame: { case: "ping", value: { nonce: 1n } } }));
      assert.equal((await errorFrame(d, true)).code, Code.FailedPrecondition);
    });

    test("a bad hello (device id a.b, duplicate tools) is fatal INVALID_ARGUMENT", async () => {
      const token = await keys.mint(newUser());
      const d1 = await device(a.port, { token, noHello: true });
      d1.send(create(DeviceFrameSchema, { frame: { case: "hello", value: { deviceId: "a.b" } } }));
      assert.equal((await errorFrame(d1, true)).code, Code.InvalidArgument);
      const d2 = await device(a.port, { token, noHello: true });
      d2.send(create(DeviceFrameSchema, { frame: { case: "hello", value: { deviceId: "ok", tools: [{ name: "t" }, { name: "t" }] } } }));
      assert.equal((await errorFrame(d2, true)).code, Code.InvalidArgument);
    });

    test("an empty frame or a gateway-to-device frame from the device is a non-fatal INVALID_ARGUMENT", async () => {
      const d = await device(a.port, { token: await keys.mint(newUser()) });
      d.send(create(DeviceFrameSchema, {}));
      assert.equal((await errorFrame(d, false)).code, Code.InvalidArgument);
      d.send(create(DeviceFrameSchema, { frame: { case: "toolCall", value: { callId: "x" } } }));
      await eventually(() => d.frames.filter((f) => f.frame.case === "error").length === 2, 10_000, "a second error");
      d.send(create(DeviceFrameSchema, { frame: { case: "ping", value: { nonce: 7n } } }));
      const pong = await d.waitFor((f) => f.frame.case === "pong", 10_000, "pong");
      assert.equal(pong.frame.case === "pong" && pong.frame.value.nonce, 7n, "still open");
    });

    test("a ping flood is fatal RESOURCE_EXHAUSTED (protocol pings and WebSocket pings alike)", async () => {
      const d1 = await device(a.port, { token: await keys.mint(newUser()) });
      const ping = create(DeviceFrameSchema, { frame: { case: "ping", value: { nonce: 1n } } });
      for (let i = 0; i < FPS * 5; i++) d1.send(ping);
      assert.equal((await errorFrame(d1, true)).code, Code.ResourceExhausted);
      assert.equal(await d1.closed, 4000 + Code.ResourceExhausted);
      const d2 = await device(a.port, { token: await keys.mint(newUser()) });
      for (let i = 0; i < FPS * 5; i++) d2.ws.ping();
      assert.equal((await errorFrame(d2, true)).code, Code.ResourceExhausted);
    });
  });

  describe("users and connections", () => {
    for (const weird of ["*", ">", "a.b", "a b", " ", "x.*.>"]) {
      test(`user id ${JSON.stringify(weird)}: INVALID_ARGUMENT in RPCs, and as a token subject it reaches only itself`, async () => {
        assert.equal(await rpcCode(agent.devices.callTool({ userId: weird, tool: "echo" })), Code.InvalidArgument);
        assert.equal(await rpcCode(agent.devices.listDevices({ userId: weird })), Code.InvalidArgument);
        const victim = newUser();
        const victimDevice = await device(b.port, { token: await keys.mint(victim), onCall: () => ({ who: "victim" }) });
        const weirdToken = await keys.mint(weird);
        const weirdDevice = await device(a.port, { token: weirdToken, onCall: () => ({ who: "weird" }) });
        const own = await rpcClients(b.baseUrl, weirdToken).devices.callTool({ tool: "echo" });
        assert.deepEqual(own.outcome.value, { who: "weird" });
        const theirs = await agent.devices.callTool({ userId: victim, tool: "echo" });
        assert.deepEqual(theirs.outcome.value, { who: "victim" });
        assert.equal(victimDevice.calls.length, 1);
        assert.equal(weirdDevice.calls.length, 1);
      });
    }

    test("more connections than the cap: 429 on the same instance, fatal RESOURCE_EXHAUSTED across instances; a takeover does not count", async () => {
      const token = await keys.mint(newUser());
      await device(a.port, { token, deviceId: "one" });
      await device(a.port, { token, deviceId: "two" });
      assert.equal((await refusal(connectDevice(a.port, { token, deviceId: "three" }))).status, 429);
      const elsewhere = await device(b.port, { token, deviceId: "three" });
      assert.equal(elsewhere.frames[0]?.frame.case, "error");
      assert.equal((await errorFrame(elsewhere, true)).code, Code.ResourceExhausted);
      // The same device reconnecting on B takes over its older connection instead.
      const first = open.find((d) => d.frames[0]?.frame.case === "welcome" && d.frames[0].frame.value.deviceId === "one")!;
      const takeover = await device(b.port, { token, deviceId: "one" });
      assert.equal(takeover.frames[0]?.frame.case, "welcome");
      assert.equal((await errorFrame(first, true)).code, Code.Aborted);
    });

    test("the credential's expiry closes the socket; reauthenticate extends it", async () => {
      const user = newUser();
      const d = await device(a.port, { token: await keys.mint(user, { ttlS: 2 }) });
      const kept = await device(a.port, { token: await keys.mint(user, { ttlS: 2 }) });
      kept.send(create(DeviceFrameSchema, { frame: { case: "reauthenticate", value: { accessToken: await keys.mint(user, { ttlS: 600 }) } } }));
      await kept.waitFor((f, ) => f.frame.case === "welcome" && kept.frames.filter((x) => x.frame.case === "welcome").length === 2, 10_000, "a second welcome");
      assert.equal((await errorFrame(d, true)).code, Code.Unauthenticated);
      assert.equal(await d.closed, 4000 + Code.Unauthenticated);
      kept.send(create(DeviceFrameSchema, { frame: { case: "ping", value: { nonce: 2n } } }));
      await kept.waitFor((f) => f.frame.case === "pong", 10_000, "pong after the first token expired");
    });

    test("a peer that stops answering is dropped and leaves presence", async () => {
      const user = newUser();
      const d = await device(b.port, { token: await keys.mint(user) });
      (d.ws as unknown as { _socket: { pause(): void } })._socket.pause(); // reads nothing, answers no ping
      assert.equal((await agent.devices.listDevices({ userId: user })).devices.length, 1);
      await eventually(async () => (await agent.devices.listDevices({ userId: user })).devices.length === 0, 6 * HEARTBEAT_MS, "the silent device to be dropped");
    });

    test("a device too slow to read is disconnected, not the gateway", async () => {
      const user = newUser();
      const d = await device(b.port, { token: await keys.mint(user) });
      (d.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      const publisher = rpcClients(a.baseUrl, await keys.mint("notifier", { roles: ["service"] }));
      const big = { blob: "x".repeat(15_000) };
      await eventually(
        async () => {
          await publisher.notify.publish({ userId: user, title: "bulk", data: big });
          return (await agent.devices.listDevices({ userId: user })).devices.length === 0;
        },
        30_000,
        "the slow device to be disconnected",
      );
      const other = newUser();
      const fine = await device(b.port, { token: await keys.mint(other), onCall: () => ({ ok: true }) });
      await agent.devices.callTool({ userId: other, tool: "echo" });
      assert.equal(fine.calls.length, 1, "the gateway still serves others");
    });
  });

  test("no access token or ticket reaches the gateways' logs (at debug level)", () => {
    for (const g of [a, b]) {
      const out = g.output();
      assert.ok(out.length > 0, "the gateways logged something");
      assert.ok(!out.includes("eyJ"), "no JWT in the logs");
      for (const t of tickets) assert.ok(!out.includes(t), "no ticket in the logs");
      assert.ok(!/authorization/i.test(out) || !/Bearer /.test(out), "no Authorization header in the logs");
    }
  });

  test("the JSON subprotocol carries the same frames as text", async () => {
    const user = newUser();
    const ws = new WebSocket(`ws://127.0.0.1:${a.port}/ws/device`, ["switchyard.device.v1+json"], { headers: { authorization: `Bearer ${await keys.mint(user)}` } });
    await new Promise((r, j) => (ws.once("open", r), ws.once("error", j)));
    assert.equal(ws.protocol, "switchyard.device.v1+json");
    const received: string[] = [];
    let wake: (() => void) | undefined;
    ws.on("message", (data, isBinary) => {
      assert.equal(isBinary, false);
      received.push(data.toString());
      wake?.();
    });
    const next = async (pred: (f: ReturnType<typeof parse>) => boolean) => {
      for (;;) {
        const i = received.findIndex((s) => pred(parse(s)));
        if (i >= 0) return parse(received.splice(i, 1)[0]!);
        await new Promise<void>((r) => (wake = r));
      }
    };
    const parse = (s: string) => fromJsonString(DeviceFrameSchema, s);
    ws.send(toJsonString(DeviceFrameSchema, create(DeviceFrameSchema, { frame: { case: "hello", value: { deviceId: "json-dev", tools: [{ name: "echo" }] } } })));
    const welcome = await next((f) => f.frame.case === "welcome");
    assert.equal(welcome.frame.case === "welcome" && welcome.frame.value.userId, user);
    const pending = agent.devices.callTool({ userId: user, tool: "echo", arguments: { a: 1 } });
    const call = await next((f) => f.frame.case === "toolCall");
    assert.ok(call.frame.case === "toolCall");
    ws.send(JSON.stringify({ toolResult: { callId: call.frame.value.callId, result: { json: true } } }));
    assert.deepEqual((await pending).outcome.value, { json: true });
    ws.terminate();
  });
});
