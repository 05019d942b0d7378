/**
 * The tracing hooks with tracing off (they fall back to the request context)
 * and on (an SDK tracer recording into memory): span kinds, parents, codes,
 * the traceparent they propagate, and the ids every log line carries.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import { context, propagation, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import { TestingService, UnaryCallRequestSchema } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createLogger } from "../log.js";
import { requestContextFrom, runWithRequest } from "../request-context.js";
import {
  currentTraceparent,
  endServerSpan,
  inServerSpan,
  runEventHandler,
  setPlatformTracer,
  startServerSpan,
  traceClientCalls,
  traceLogFields,
  tracePublish,
} from "./tracing.js";

const parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
const parentSpan = "00f067aa0ba902b7";
const traceparent = `00-${parentTrace}-${parentSpan}-01`;

/** A log whose lines are collected. */
function capturedLog() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n")) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger("info", stream as never), lines };
}

/** Calls `traceClientCalls` around a `next` that answers with `answer`. */
async function clientCall(answer: (req: UnaryRequest) => Promise<UnaryResponse>) {
  const method = TestingService.method.unaryCall;
  const req = {
    stream: false as const,
    service: TestingService,
    method,
    url: "http://x/switchyard.testing.v1.TestingService/UnaryCall",
    requestMethod: "POST",
    header: new Headers(),
    contextValues: undefined as never,
    signal: new AbortController().signal,
    message: create(UnaryCallRequestSchema, {}),
  } as unknown as UnaryRequest;
  return { req, result: traceClientCalls(answer as never)(req as never) };
}

describe("with tracing off", () => {
  test("logs and outgoing context come from the request context; hooks just run", async () => {
    assert.deepEqual(traceLogFields(), {});
    const rc = requestContextFrom((n) => (n === "traceparent" ? traceparent : null), undefined);
    runWithRequest(rc, () => {
      assert.deepEqual(traceLogFields(), { traceId: parentTrace, spanId: rc.spanId });
      assert.equal(currentTraceparent(), `00-${parentTrace}-${rc.spanId}-01`);
    });
    assert.equal(startServerSpan("a.B/C", "a.B", "C", "grpc", () => null), undefined);
    assert.equal(await tracePublish("events.x", traceparent, "id", async () => 7), 7);
    assert.equal(await runEventHandler(rc, { eventId: "e", subject: "events.x", deliveryCount: 1, traceparent }, "c", async () => 8), 8);
    const { req, result } = await clientCall(async () => ({ stream: false, message: {} }) as never);
    await result;
    assert.equal(req.header.get("traceparent"), null, "the interceptor adds nothing (propagateRequestContext does)");
  });
});

describe("with tracing on", () => {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const install = () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    setPlatformTracer(provider.getTracer("test"));
  };
  const spans = () => exporter.getFinishedSpans();

  test("a SERVER span continues the caller's trace; logs, outbox rows and client calls made in it name it", async () => {
    install();
    exporter.reset();
    const { log, lines } = capturedLog();
    const server = startServerSpan("a.B/C", "a.B", "C", "grpc-web", (n) => (n === "traceparent" ? traceparent : null))!;
    const sc = server.span.spanContext();
    assert.equal(sc.traceId, parentTrace);
    let sent: string | null = null;
    await inServerSpan(server, async () => {
      log.info("inside");
      assert.equal(currentTraceparent(), `00-${parentTrace}-${sc.spanId}-01`, "an outbox row written now names the SERVER span");
      const { req, result } = await clientCall(async (r) => {
        sent = r.header.get("traceparent");
        return { stream: false, message: {} } as never;
      });
      await result;
      void req;
    });
    endServerSpan(server, new ConnectError("nope", Code.NotFound));
    log.flush();
    assert.equal(lines[0]!.traceId, parentTrace);
    assert.equal(lines[0]!.spanId, sc.spanId);
    const [client, srv] = spans();
    assert.equal(client!.kind, SpanKind.CLIENT);
    assert.equal(client!.name, "switchyard.testing.v1.TestingService/UnaryCall");
    assert.equal(client!.parentSpanContext?.spanId, sc.spanId, "the CLIENT span is a child of the SERVER span");
    assert.equal(sent, `00-${parentTrace}-${client!.spanContext().spanId}-01`, "the call carries the CLIENT span");
    assert.equal(srv!.kind, SpanKind.SERVER);
    assert.equal(srv!.parentSpanContext?.spanId, parentSpan);
    assert.equal(srv!.attributes["rpc.grpc.status_code"], Code.NotFound);
    assert.equal(srv!.status.code, SpanStatusCode.UNSET, "NOT_FOUND is the caller's doing, not a server error");
  });

  test("a failed client call ends its span with the code as an error", async () => {
    install();
    exporter.reset();
    const { result } = await clientCall(async () => {
      throw new ConnectError("down", Code.Unavailable);
    });
    await assert.rejects(result, /down/);
    const [client] = spans();
    assert.equal(client!.attributes["rpc.grpc.status_code"], Code.Unavailable);
    assert.equal(client!.status.code, SpanStatusCode.ERROR);
  });

  test("an event's PRODUCER and CONSUMER spans are children of the span that wrote it; the handler's logs name the CONSUMER span", async () => {
    install();
    exporter.reset();
    const { log, lines } = capturedLog();
    await tracePublish("events.x", traceparent, "ev1", async () => undefined);
    const rc = requestContextFrom((n) => (n === "traceparent" ? traceparent : null), undefined);
    await assert.rejects(
      runEventHandler(rc, { eventId: "ev1", subject: "events.x", deliveryCount: 2, traceparent }, "svc-x", async () => {
        log.info("handling");
        throw new Error("handler broke");
      }),
    );
    log.flush();
    const [producer, consumer] = spans();
    assert.equal(producer!.kind, SpanKind.PRODUCER);
    assert.equal(producer!.name, "send events.x");
    assert.equal(producer!.parentSpanContext?.spanId, parentSpan);
    assert.equal(consumer!.kind, SpanKind.CONSUMER);
    assert.equal(consumer!.name, "process events.x");
    assert.equal(consumer!.parentSpanContext?.spanId, parentSpan);
    assert.equal(consumer!.attributes["messaging.consumer.group.name"], "svc-x");
    assert.equal(consumer!.status.code, SpanStatusCode.ERROR);
    assert.equal(lines[0]!.spanId, consumer!.spanContext().spanId);
    setPlatformTracer(undefined);
  });
});
