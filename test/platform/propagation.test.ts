/**
 * What a request carries into the calls its handler makes: the caller's trace
 * (same trace id, new span), its request id, and no more than the time left
 * of its deadline.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createServiceClient, createServiceTransport } from "../../platform/client.js";
import { createLogger } from "../../platform/log.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { register } from "../../platform/rpc/pipeline.js";
import { readPlatformSettings } from "../../platform/settings.js";

const settings = () => readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent" });
let downstream: RunningProcess;
let upstream: RunningProcess;

before(async () => {
  // Downstream reports what it received: traceparent, request id, time left.
  downstream = await startProcess(
    [
      {
        name: "downstream",
        summary: "reports what it received",
        serves: [TestingService],
        start: () => ({
          services: [
            register(TestingService, {
              unaryCall: (_req, ctx) => ({
                text: `${ctx.requestHeader.get("traceparent")} ${ctx.requestHeader.get("x-request-id")}`,
                deadlineRemainingMs: BigInt(Math.round(ctx.timeoutMs() ?? -1)),
              }),
            }),
          ],
        }),
      },
    ],
    settings(),
    createLogger("silent"),
  );
  const next = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${downstream.port}`));
  // Upstream relays each call downstream, after spending 300 ms of its deadline.
  upstream = await startProcess(
    [
      {
        name: "upstream",
        summary: "relays each call downstream",
        serves: [TestingService],
        start: () => ({
          services: [
            register(TestingService, {
              async unaryCall(req) {
                await new Promise((r) => setTimeout(r, req.sleepMs));
                return next.unaryCall({});
              },
            }),
          ],
        }),
      },
    ],
    settings(),
    createLogger("silent"),
  );
});
after(async () => {
  await upstream.stop();
  await downstream.stop();
});

for (const [protocol, transport] of [
  ["gRPC", (port: number) => createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` })],
  ["gRPC-Web", (port: number) => createGrpcWebTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1" })],
] as const) {
  it(`over ${protocol}: trace, request id and the remaining deadline reach the next service`, async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const client = createClient(TestingService, transport(upstream.port));
    const res = await client.unaryCall(
      { sleepMs: 300 },
      { timeoutMs: 2000, headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, "x-request-id": "req-42" } },
    );
    const [traceparent, requestId] = res.text.split(" ");
    const [, gotTrace, gotSpan] = traceparent!.split("-");
    assert.equal(gotTrace, traceId, "same trace");
    assert.notEqual(gotSpan, "00f067aa0ba902b7", "a new span: the upstream's own");
    assert.equal(requestId, "req-42");
    const left = Number(res.deadlineRemainingMs);
    assert.ok(left > 0 && left <= 1700, `downstream saw ${left} ms left of a 2000 ms deadline after 300 ms upstream`);
  });
}

it("a call started after the deadline passed fails DEADLINE_EXCEEDED without reaching the next service", async () => {
  const client = createClient(TestingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${upstream.port}` }));
  await assert.rejects(client.unaryCall({ sleepMs: 400 }, { timeoutMs: 200 }), /deadline/i);
});
