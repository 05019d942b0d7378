/**
 * An event's spans, seen by a local OTLP/HTTP receiver: a browser-style
 * gRPC-Web call (carrying the browser's `traceparent`) reaches a service
 * whose transaction writes an event; the RPC's SERVER span continues the
 * browser's trace, the relay's PRODUCER span and the consumer's CONSUMER
 * span are both children of that SERVER span (the outbox row carries the
 * trace context captured when the transaction wrote it), and the process's
 * log lines carry the same trace and span ids.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { SpanKindWire, StatusWire, startOtlpReceiver, type OtlpReceiver } from "../support/otlp-receiver.js";
import { spawnScript, type ScriptProcess } from "../support/spawn.js";
import { waitFor } from "./helpers.js";

let nats: OwnNats;
let dbHandle: { url: string; drop(): Promise<void> };
let receiver: OtlpReceiver;
let ledger: ScriptProcess;

before(async () => {
  nats = await startNats();
  dbHandle = await createTestDatabase("sy_evtrace");
  receiver = await startOtlpReceiver();
  ledger = await spawnScript("test/data/fixtures/ledger-main.ts", {
    env: {
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      SHUTDOWN_GRACE_MS: "1000",
      DATABASE_URL: dbHandle.url,
      NATS_URL: nats.url,
      LEDGER_CONSUMER: "ledger-trace",
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_SERVICE_NAME: "ledger",
      OTEL_BSP_SCHEDULE_DELAY: "50",
    },
    ready: /ready (\d+)/,
  });
});

after(async () => {
  await ledger?.stop();
  await receiver?.close();
  await dbHandle?.drop();
  await nats?.kill();
});

test("a gRPC-Web call's transaction writes an event: its PRODUCER and CONSUMER spans are children of the RPC's SERVER span, in the browser's trace", async () => {
  const browserTrace = randomBytes(16).toString("hex");
  const browserSpan = randomBytes(8).toString("hex");
  const client = createClient(TestingService, createGrpcWebTransport({ baseUrl: `http://127.0.0.1:${ledger.port}`, httpVersion: "1.1" }));
  await client.unaryCall({ text: "traced" }, { headers: { traceparent: `00-${browserTrace}-${browserSpan}-01` } });

  await receiver.waitFor((spans) => spans.filter((s) => s.traceId === browserTrace).length >= 3, 15_000, "the RPC's, the publish's and the handler's spans");
  const spans = receiver.trace(browserTrace);
  const server = spans.find((s) => s.kind === SpanKindWire.SERVER && s.name === "switchyard.testing.v1.TestingService/UnaryCall");
  const producer = spans.find((s) => s.kind === SpanKindWire.PRODUCER);
  const consumer = spans.find((s) => s.kind === SpanKindWire.CONSUMER);
  assert.ok(server && producer && consumer, `SERVER, PRODUCER and CONSUMER spans in ${JSON.stringify(spans.map((s) => [s.name, s.kind]))}`);
  assert.equal(server.service, "ledger");
  assert.equal(server.parentSpanId, browserSpan, "the SERVER span continues the browser's span");
  assert.equal(server.attributes["switchyard.rpc.protocol"], "grpc-web");
  assert.equal(producer.name, "send events.auth.user_logged_in");
  assert.equal(producer.parentSpanId, server.spanId, "the outbox publish is a child of the RPC that wrote the row");
  assert.equal(consumer.name, "process events.auth.user_logged_in");
  assert.equal(consumer.parentSpanId, server.spanId, "the handled event is a child of the RPC whose transaction wrote it");
  assert.equal(consumer.attributes["messaging.consumer.group.name"], "ledger-trace");
  for (const s of [server, producer, consumer]) assert.equal(s.status.code, StatusWire.UNSET, `${s.name} is not an error`);

  // The RPC's log line names the same trace and the SERVER span.
  const line = await waitFor("the rpc log line", () =>
    ledger
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { msg?: string; traceId?: string; spanId?: string; rpc?: string })
      .find((l) => l.msg === "rpc" && l.traceId === browserTrace),
  );
  assert.equal(line.spanId, server.spanId);
});
