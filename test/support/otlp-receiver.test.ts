/**
 * The test receiver reads what real OpenTelemetry exporters send: the
 * OTLP/HTTP exporter's JSON (over HTTP, as it posts it) and the official
 * protobuf serializer's binary body, to the same spans.
 */
import { SpanKind, SpanStatusCode, context, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import assert from "node:assert/strict";
import { test } from "node:test";
import { SpanKindWire, StatusWire, spansFromProtobuf, startOtlpReceiver } from "./otlp-receiver.js";

test("JSON from the OTLP/HTTP exporter and binary protobuf decode to the same span tree", async () => {
  const memory = new InMemorySpanExporter();
  const provider = new TracerProvider({ resource: resourceFromAttributes({ "service.name": "svc" }), spanProcessors: [new SimpleSpanProcessor({ exporter: memory })] });
  const tracer = provider.getTracer("t");
  const parent = tracer.startSpan("parent", { kind: SpanKind.SERVER, attributes: { "rpc.grpc.status_code": 14, s: "x", b: true, d: 1.5 } });
  const child = tracer.startSpan("child", { kind: SpanKind.PRODUCER }, trace.setSpan(context.active(), parent));
  child.end();
  parent.setStatus({ code: SpanStatusCode.ERROR, message: "down" });
  parent.end();
  const finished = memory.getFinishedSpans();

  const receiver = await startOtlpReceiver();
  try {
    const exporter = new OTLPTraceExporter({ url: `${receiver.url}/v1/traces` });
    const result = await new Promise<{ code: number }>((resolve) => exporter.export(finished, resolve));
    assert.equal(result.code, 0, "the exporter saw a successful export");
    await exporter.shutdown();
    assert.equal(receiver.requests["application/json"], 1, "this exporter posts JSON");
    const fromJson = receiver.spans;
    const fromProto = spansFromProtobuf(Buffer.from(ProtobufTraceSerializer.serializeRequest(finished)!));
    for (const spans of [fromJson, fromProto]) {
      const p = spans.find((s) => s.name === "parent")!;
      const c = spans.find((s) => s.name === "child")!;
      assert.equal(p.service, "svc");
      assert.equal(p.kind, SpanKindWire.SERVER);
      assert.equal(c.kind, SpanKindWire.PRODUCER);
      assert.equal(c.parentSpanId, p.spanId);
      assert.equal(c.traceId, p.traceId);
      assert.equal(p.parentSpanId, "");
      assert.deepEqual(p.status, { code: StatusWire.ERROR, message: "down" });
      assert.deepEqual(p.attributes, { "rpc.grpc.status_code": 14, s: "x", b: true, d: 1.5 });
      assert.equal(p.spanId, parent.spanContext().spanId);
    }
    assert.deepEqual(fromProto, fromJson);
  } finally {
    await receiver.close();
  }
});
