/**
 * One CallTool made with the platform client from this process to gateway A,
 * for a device held by gateway B, seen by a local OTLP/HTTP receiver as one
 * trace: caller (CLIENT) → A (SERVER) → A publishes to JetStream (PRODUCER)
 * → B delivers to the device (CONSUMER) → the device's round trip (CLIENT)
 * → A receives the result (CONSUMER), every span with the right parent; the
 * same from a browser's gRPC-Web call carrying its own `traceparent`; and a
 * call that fails carries its gRPC code on every span of its trace.
 */
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { randomBytes } from "node:crypto";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DeviceService } from "../../gen/switchyard/device/v1/device_pb.js";
import { createServiceClient, createServiceTransport } from "../../platform/client.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { startTracing, type Tracing } from "../../platform/telemetry/sdk.js";
import { natsUrl } from "../support/infra.js";
import { SpanKindWire, StatusWire, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "../support/otlp-receiver.js";
import { connectDevice, dropPrefix, newPrefix, newUser, startGateway, startTestKeys, type GatewayProcess, type TestDevice, type TestKeys, type ToolHandler } from "./support.js";

const CALL_TOOL = "switchyard.device.v1.DeviceService/CallTool";

describe("tracing a tool call across gateway instances", () => {
  let receiver: OtlpReceiver;
  let tracing: Tracing;
  let keys: TestKeys;
  let nats: string;
  const prefix = newPrefix();
  let a: GatewayProcess, b: GatewayProcess;
  let client: ReturnType<typeof createServiceClient<typeof DeviceService>>;
  const devices: TestDevice[] = [];

  before(async () => {
    receiver = await startOtlpReceiver();
    keys = await startTestKeys();
    nats = await natsUrl();
    const env = (name: string) => ({
      NATS_URL: nats,
      AUTH_JWKS_URL: keys.jwksUrl,
      GATEWAY_NATS_PREFIX: prefix,
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_SERVICE_NAME: name,
      OTEL_BSP_SCHEDULE_DELAY: "50",
    });
    [a, b] = await Promise.all([startGateway(env("gateway-a")), startGateway(env("gateway-b"))]);
    // This process is the calling service: tracing on, exporting to the same receiver.
    tracing = (await startTracing(readPlatformSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "50" }), "caller"))!;
    assert.ok(tracing, "tracing installs in the test process");
    const token = await keys.mint("agent-runner", { roles: ["service"] });
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    };
    client = createServiceClient(DeviceService, createServiceTransport(a.baseUrl, [auth]));
  });

  after(async () => {
    for (const d of devices) d.ws.terminate();
    await tracing?.shutdown();
    await Promise.all([a?.kill(), b?.kill()]);
    await dropPrefix(nats, prefix);
    await keys?.close();
    await receiver?.close();
  });

  /** The spans of the trace whose root is the caller's CLIENT span, once all `count` have arrived. */
  async function traceOf(count: number, what: string): Promise<{ root: ReceivedSpan; spans: ReceivedSpan[] }> {
    await tracing.flush();
    const roots = () => receiver.spans.filter((s) => s.service === "caller" && s.kind === SpanKindWire.CLIENT && s.name === CALL_TOOL);
    await receiver.waitFor(() => roots().length > 0, 10_000, "the caller's CLIENT span");
    const root = roots().at(-1)!;
    await receiver.waitFor(() => receiver.trace(root.traceId).length >= count, 10_000, `${count} spans of ${what}`);
    return { root, spans: receiver.trace(root.traceId) };
  }

  /** The one span of `spans` matching, failing with the whole tree otherwise. */
  function one(spans: ReceivedSpan[], service: string, kind: number, name: string): ReceivedSpan {
    const found = spans.filter((s) => s.service === service && s.kind === kind && s.name === name);
    assert.equal(found.length, 1, `one ${service} ${name} (kind ${kind}) in:\n${spans.map((s) => `  ${s.service} ${s.name} k${s.kind} ${s.spanId}<-${s.parentSpanId}`).join("\n")}`);
    return found[0]!;
  }

  test("caller → gateway A → JetStream → gateway B → device → result: one trace, correct parents", async () => {
    const user = newUser();
    let sentTraceparent = "";
    const onCall: ToolHandler = (call) => {
      sentTraceparent = call.traceparent;
      return { echoed: call.arguments ?? null };
    };
    devices.push(await connectDevice(b.port, { token: await keys.mint(user), tools: ["echo"], onCall }));
    const res = await client.callTool({ userId: user, tool: "echo", arguments: { n: 1 }, waitForDevice: true });
    assert.equal(res.outcome.case, "result");

    const { root, spans } = await traceOf(6, "the tool call");
    assert.equal(root.parentSpanId, "", "the caller's span is the root");
    const server = one(spans, "gateway-a", SpanKindWire.SERVER, CALL_TOOL);
    const send = one(spans, "gateway-a", SpanKindWire.PRODUCER, `send ${prefix}.tools`);
    const deliver = one(spans, "gateway-b", SpanKindWire.CONSUMER, `process ${prefix}.deliver`);
    const device = one(spans, "gateway-b", SpanKindWire.CLIENT, "device echo");
    const result = one(spans, "gateway-a", SpanKindWire.CONSUMER, `process ${prefix}.results`);
    assert.equal(server.parentSpanId, root.spanId, "A's SERVER span is a child of the caller's CLIENT span");
    assert.equal(send.parentSpanId, server.spanId, "the JetStream publish is a child of A's SERVER span");
    assert.equal(deliver.parentSpanId, send.spanId, "B's delivery continues A's publish (context through the stream's RePublish)");
    assert.equal(device.parentSpanId, deliver.spanId, "the device round trip is a child of B's delivery");
    assert.equal(sentTraceparent, `00-${device.traceId}-${device.spanId}-01`, "the device's tool_call carries the round trip's context");
    assert.equal(result.parentSpanId, deliver.spanId, "A's receipt of the result continues B's delivery");
    for (const s of [root, server, send, deliver, device, result]) {
      assert.equal(s.traceId, root.traceId);
      assert.equal(s.status.code, StatusWire.UNSET, `${s.service} ${s.name} is not an error`);
      assert.equal(s.attributes["rpc.grpc.status_code"], 0, `${s.service} ${s.name} carries OK`);
    }
    assert.equal(server.attributes["rpc.system"], "grpc");
    assert.equal(deliver.attributes["switchyard.tool_call.id"], res.callId);
  });

  test("a browser's gRPC-Web call: its trace runs through gateway A, JetStream and gateway B to the device and back", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    devices.push(await connectDevice(b.port, { token, tools: ["echo"], onCall: () => ({ ok: true }) }));
    const browserTrace = randomBytes(16).toString("hex");
    const browserSpan = randomBytes(8).toString("hex");
    const browser = createClient(DeviceService, createGrpcWebTransport({ baseUrl: a.baseUrl, httpVersion: "1.1" }));
    const res = await browser.callTool(
      { tool: "echo", waitForDevice: true },
      { headers: { authorization: `Bearer ${token}`, traceparent: `00-${browserTrace}-${browserSpan}-01` } },
    );
    assert.equal(res.outcome.case, "result");

    await receiver.waitFor(() => receiver.trace(browserTrace).length >= 5, 10_000, "5 spans of the browser's trace");
    const spans = receiver.trace(browserTrace);
    const server = one(spans, "gateway-a", SpanKindWire.SERVER, CALL_TOOL);
    const send = one(spans, "gateway-a", SpanKindWire.PRODUCER, `send ${prefix}.tools`);
    const deliver = one(spans, "gateway-b", SpanKindWire.CONSUMER, `process ${prefix}.deliver`);
    const device = one(spans, "gateway-b", SpanKindWire.CLIENT, "device echo");
    const result = one(spans, "gateway-a", SpanKindWire.CONSUMER, `process ${prefix}.results`);
    assert.equal(server.parentSpanId, browserSpan, "A's SERVER span continues the browser's span");
    assert.equal(server.attributes["switchyard.rpc.protocol"], "grpc-web");
    assert.equal(send.parentSpanId, server.spanId);
    assert.equal(deliver.parentSpanId, send.spanId);
    assert.equal(device.parentSpanId, deliver.spanId);
    assert.equal(result.parentSpanId, deliver.spanId);
  });

  test("a failed call's spans carry its gRPC code", async () => {
    const user = newUser();
    // This device drops its connection when the call arrives: B fails the call UNAVAILABLE.
    devices.push(await connectDevice(b.port, { token: await keys.mint(user), tools: ["flaky"], onCall: (_call, d) => void d.ws.terminate() }));
    const err = await client.callTool({ userId: user, tool: "flaky", waitForDevice: true }).then(
      () => assert.fail("the call should fail"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(err.code, Code.Unavailable);

    const { root, spans } = await traceOf(6, "the failed call");
    const server = one(spans, "gateway-a", SpanKindWire.SERVER, CALL_TOOL);
    const deliver = one(spans, "gateway-b", SpanKindWire.CONSUMER, `process ${prefix}.deliver`);
    const device = one(spans, "gateway-b", SpanKindWire.CLIENT, "device flaky");
    const result = one(spans, "gateway-a", SpanKindWire.CONSUMER, `process ${prefix}.results`);
    for (const s of [root, server, deliver, device, result]) {
      assert.equal(s.attributes["rpc.grpc.status_code"], Code.Unavailable, `${s.service} ${s.name} carries UNAVAILABLE`);
      assert.equal(s.status.code, StatusWire.ERROR, `${s.service} ${s.name} is an error`);
    }
    assert.match(deliver.status.message, /disconnected/);
    const send = one(spans, "gateway-a", SpanKindWire.PRODUCER, `send ${prefix}.tools`);
    assert.equal(send.status.code, StatusWire.UNSET, "the publish itself succeeded");
  });

  test("a caller's mistake is on the spans but not a server error", async () => {
    const err = await client.callTool({ userId: newUser(), tool: "" }).then(
      () => assert.fail("the call should fail"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(err.code, Code.InvalidArgument);
    const { root, spans } = await traceOf(2, "the refused call");
    const server = one(spans, "gateway-a", SpanKindWire.SERVER, CALL_TOOL);
    assert.equal(server.attributes["rpc.grpc.status_code"], Code.InvalidArgument);
    assert.equal(server.status.code, StatusWire.UNSET, "INVALID_ARGUMENT is the caller's fault: the SERVER span is no error");
    assert.equal(root.status.code, StatusWire.ERROR, "the caller's CLIENT span is");
  });
});
