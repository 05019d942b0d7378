/**
 * Spans for what the platform does: one SERVER span per RPC (both protocol
 * paths, through the telemetry middleware), one CLIENT span per call made
 * with the platform client (a Connect interceptor), one PRODUCER span per
 * outbox row published and one CONSUMER span per event handled. Context
 * travels as W3C `traceparent` in RPC headers and NATS headers.
 *
 * Only the OpenTelemetry API is used here; `sdk.ts` installs the SDK and
 * hands this module its tracer. Until it does (no OTLP endpoint set), every
 * function here is one `undefined` check and falls back to the platform's own
 * request context (request-context.ts), which still gives every log line a
 * trace and span id and still propagates `traceparent`.
 */
import {
  context,
  defaultTextMapGetter,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type SpanContext,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from "@opentelemetry/api";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { currentRequest, requestIdFrom, runWithRequest, traceparentOf, type RequestContext } from "../request-context.js";

let activeTracer: Tracer | undefined;

/** Installs (or with undefined, removes) the tracer every span here is started with; called by sdk.ts. */
export function setPlatformTracer(tracer: Tracer | undefined): void {
  activeTracer = tracer;
}

/** Whether spans are being recorded in this process (an OTLP endpoint is set). */
export function tracingEnabled(): boolean {
  return activeTracer !== undefined;
}

/** Attribute names (OpenTelemetry semantic conventions for RPC and messaging). */
export const attr = {
  rpcSystem: "rpc.system",
  rpcService: "rpc.service",
  rpcMethod: "rpc.method",
  grpcStatus: "rpc.grpc.status_code",
  protocol: "switchyard.rpc.protocol",
  messagingSystem: "messaging.system",
  destination: "messaging.destination.name",
  operationType: "messaging.operation.type",
  messageId: "messaging.message.id",
  consumerGroup: "messaging.consumer.group.name",
  deliveryCount: "messaging.message.delivery_count",
} as const;

// ---- context in headers ------------------------------------------------------

const readerGetter: TextMapGetter<(name: string) => string | null> = {
  get: (read, key) => read(key) ?? undefined,
  keys: () => [],
};
const headersSetter: TextMapSetter<Headers> = { set: (h, k, v) => h.set(k, v) };

/** The context a `traceparent` (and `tracestate`) read through `read` continue; the root context when absent or invalid. */
export function contextFrom(read: (name: string) => string | null | undefined): Context {
  return propagation.extract(ROOT_CONTEXT, (name: string) => read(name) ?? null, readerGetter);
}

/** The context a bare `traceparent` string continues. */
export function contextOfTraceparent(traceparent: string | null | undefined): Context {
  if (!traceparent) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, { traceparent }, defaultTextMapGetter);
}

/** The W3C `traceparent` of a span context. */
export function traceparentOfSpan(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${flagsHex(sc.traceFlags)}`;
}

function flagsHex(flags: number): string {
  return flags < 16 ? `0${flags.toString(16)}` : flags.toString(16);
}

/**
 * The `traceparent` naming the span running now: the active span when tracing
 * is on, else the request being served; undefined outside both. This is what
 * an outbox row records, so the event's consumer continues the span of the
 * RPC whose transaction wrote it.
 */
export function currentTraceparent(): string | undefined {
  if (activeTracer !== undefined) {
    const span = trace.getSpan(context.active());
    if (span !== undefined) return traceparentOfSpan(span.spanContext());
  }
  const rc = currentRequest();
  return rc === undefined ? undefined : traceparentOf(rc);
}

/**
 * Trace and span id for a log line written now (the pino mixin of log.ts):
 * the active span's when tracing is on, else the request context's. A new
 * object every time: pino merges the line's own fields into it.
 */
export function traceLogFields(): { traceId?: string; spanId?: string } {
  if (activeTracer !== undefined) {
    const span = trace.getSpan(context.active());
    if (span !== undefined) {
      const sc = span.spanContext();
      return { traceId: sc.traceId, spanId: sc.spanId };
    }
  }
  const rc = currentRequest();
  return rc === undefined ? {} : { traceId: rc.traceId, spanId: rc.spanId };
}

/**
 * The request context of an RPC served in its SERVER `span`: the span's ids
 * (which already continue the caller's `traceparent`), so logs and outgoing
 * calls name the span; no ids of its own are drawn.
 */
export function requestOfServerSpan(span: Span, header: (name: string) => string | null, deadline: number | undefined): RequestContext {
  const sc = span.spanContext();
  return { requestId: requestIdFrom(header, sc.spanId), traceId: sc.traceId, spanId: sc.spanId, traceFlags: flagsHex(sc.traceFlags), deadline };
}

/** The request context of work running in `span`: its ids replace `rc`'s, so logs and outgoing calls name the span. */
export function requestInSpan(rc: RequestContext, span: Span): RequestContext {
  const sc = span.spanContext();
  return { requestId: rc.requestId, traceId: sc.traceId, spanId: sc.spanId, traceFlags: flagsHex(sc.traceFlags), deadline: rc.deadline };
}

// ---- status ------------------------------------------------------------------

/** The gRPC code of an error (0 for none). */
export function grpcCodeOf(err: unknown): number {
  if (err === undefined) return 0;
  return err instanceof ConnectError ? err.code : Code.Internal;
}

/** Codes that are the server's fault: a SERVER span is an error only for these (semantic conventions for gRPC). */
const serverFaults = new Set<number>([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

/**
 * Ends `span` with the gRPC `code` as `rpc.grpc.status_code`; the span's
 * status is ERROR for any failure on a CLIENT, PRODUCER or CONSUMER span, and
 * for server faults only on a SERVER span (a caller's NOT_FOUND is not the
 * server failing).
 */
export function endWithCode(span: Span, kind: SpanKind, code: number, message?: string): void {
  span.setAttribute(attr.grpcStatus, code);
  if (code !== 0 && (kind !== SpanKind.SERVER || serverFaults.has(code))) {
    span.setStatus({ code: SpanStatusCode.ERROR, message });
  }
  span.end();
}

function messageOf(err: unknown): string {
  return err instanceof ConnectError ? err.rawMessage : err instanceof Error ? err.message : String(err);
}

// ---- spans -------------------------------------------------------------------

/** Starts a span of `kind` under `parent` (default: the active context); undefined when tracing is off. */
export function startSpan(name: string, kind: SpanKind, attributes: Attributes, parent?: Context): Span | undefined {
  return activeTracer?.startSpan(name, { kind, attributes }, parent ?? context.active());
}

/** Runs `fn` with `span` active (under `parent`, default the active context). */
export function withSpan<T>(span: Span, fn: () => T, parent: Context = context.active()): T {
  return context.with(trace.setSpan(parent, span), fn);
}

/** Writes the context of `span` into `set` as W3C trace-context headers. */
export function injectSpan(span: Span, set: (name: string, value: string) => void): void {
  propagation.inject(trace.setSpan(context.active(), span), set, fnSetter);
}
const fnSetter: TextMapSetter<(name: string, value: string) => void> = { set: (set, k, v) => set(k, v) };

/** What the telemetry middleware needs to trace one RPC. */
export interface ServerSpan {
  readonly span: Span;
  /** The context the handler runs in: the caller's (from headers) with this span active. */
  readonly context: Context;
}

/** Starts the SERVER span of one call, continuing the caller's trace from its headers; undefined when tracing is off. */
export type ServerSpanStarter = (protocol: string, header: (name: string) => string | null) => ServerSpan | undefined;

/**
 * The SERVER-span starter of one RPC ("package.Service/Method"), built once
 * per method: its attributes are made once per protocol, not per call, and a
 * call without `traceparent` (most calls from outside) skips extraction.
 */
export function serverSpanStarter(rpc: string, service: string, method: string): ServerSpanStarter {
  const attributesByProtocol = new Map<string, Attributes>();
  const attributesOf = (protocol: string): Attributes => {
    let a = attributesByProtocol.get(protocol);
    if (a === undefined) {
      a = Object.freeze({ [attr.rpcSystem]: protocol === "connect" ? "connect_rpc" : "grpc", [attr.rpcService]: service, [attr.rpcMethod]: method, [attr.protocol]: protocol });
      attributesByProtocol.set(protocol, a);
    }
    return a;
  };
  return (protocol, header) => {
    if (activeTracer === undefined) return undefined;
    const parent = header("traceparent") === null ? ROOT_CONTEXT : propagation.extract(ROOT_CONTEXT, header, readerGetter);
    const span = activeTracer.startSpan(rpc, { kind: SpanKind.SERVER, attributes: attributesOf(protocol) }, parent);
    return { span, context: trace.setSpan(parent, span) };
  };
}

/** Starts the SERVER span of an RPC call (see `serverSpanStarter`, which is cheaper per call). */
export function startServerSpan(rpc: string, service: string, method: string, protocol: string, header: (name: string) => string | null): ServerSpan | undefined {
  return serverSpanStarter(rpc, service, method)(protocol, header);
}

/** Runs `fn` in the context of an RPC's SERVER span. */
export function inServerSpan<T>(s: ServerSpan, fn: () => T): T {
  return context.with(s.context, fn);
}

/** Ends an RPC's SERVER span with the call's outcome. */
export function endServerSpan(s: ServerSpan, err: unknown): void {
  const code = grpcCodeOf(err);
  endWithCode(s.span, SpanKind.SERVER, code, code === 0 ? undefined : messageOf(err));
}

/**
 * The platform client's tracing, as a Connect interceptor (usable with any
 * Connect transport): a CLIENT span per call, child of the active span, whose
 * context the call carries in `traceparent`; it ends when the response (or
 * the last message of a stream) arrives, with the call's gRPC code.
 */
export const traceClientCalls: Interceptor = (next) => (req) => (activeTracer === undefined ? next(req) : tracedCall(activeTracer, next, req));

/** Name and attributes of each method's CLIENT spans, made once. */
const clientSpanNames = new WeakMap<object, { name: string; attributes: Attributes }>();

async function tracedCall(tracer: Tracer, next: Parameters<Interceptor>[0], req: Parameters<Parameters<Interceptor>[0]>[0]) {
  const parent = context.active();
  let named = clientSpanNames.get(req.method);
  if (named === undefined) {
    named = {
      name: `${req.service.typeName}/${req.method.name}`,
      attributes: Object.freeze({ [attr.rpcSystem]: "grpc", [attr.rpcService]: req.service.typeName, [attr.rpcMethod]: req.method.name }),
    };
    clientSpanNames.set(req.method, named);
  }
  const span = tracer.startSpan(named.name, { kind: SpanKind.CLIENT, attributes: named.attributes }, parent);
  const ctx = trace.setSpan(parent, span);
  propagation.inject(ctx, req.header, headersSetter);
  let res;
  try {
    res = await context.with(ctx, () => next(req));
  } catch (err) {
    endWithCode(span, SpanKind.CLIENT, grpcCodeOf(err), messageOf(err));
    throw err;
  }
  if (!res.stream) {
    endWithCode(span, SpanKind.CLIENT, 0);
    return res;
  }
  return { ...res, message: endAfterStream(res.message, span) };
}

async function* endAfterStream<T>(messages: AsyncIterable<T>, span: Span): AsyncIterable<T> {
  let err: unknown;
  try {
    yield* messages;
  } catch (e) {
    err = e;
    throw e;
  } finally {
    const code = grpcCodeOf(err);
    endWithCode(span, SpanKind.CLIENT, code, code === 0 ? undefined : messageOf(err));
  }
}

/**
 * Publishes one outbox row inside a PRODUCER span, child of the span that
 * wrote the row (its `traceparent`). The message keeps carrying the writer's
 * traceparent, not this span's: the writer is where the event was created,
 * and its consumers continue it.
 */
export function tracePublish<T>(subject: string, traceparent: string | null, messageId: string, publish: () => Promise<T>): Promise<T> {
  if (activeTracer === undefined) return publish();
  const span = activeTracer.startSpan(
    `send ${subject}`,
    { kind: SpanKind.PRODUCER, attributes: { [attr.messagingSystem]: "nats", [attr.destination]: subject, [attr.operationType]: "send", [attr.messageId]: messageId } },
    contextOfTraceparent(traceparent),
  );
  return publish().then(
    (v) => {
      endWithCode(span, SpanKind.PRODUCER, 0);
      return v;
    },
    (err: unknown) => {
      endWithCode(span, SpanKind.PRODUCER, Code.Unavailable, messageOf(err));
      throw err;
    },
  );
}

/** What `runEventHandler` needs to know about a delivered event. */
export interface HandledEvent {
  readonly eventId: string;
  readonly subject: string;
  readonly deliveryCount: number;
  readonly traceparent: string | undefined;
}

/**
 * Runs an event's handler with `rc` as its request context, inside a CONSUMER
 * span that is a child of the span whose transaction wrote the event (the
 * event's `traceparent`). The span ends when the handler settles.
 */
export function runEventHandler<T>(rc: RequestContext, event: HandledEvent, consumer: string, fn: () => Promise<T>): Promise<T> {
  if (activeTracer === undefined) return runWithRequest(rc, fn);
  const parent = contextOfTraceparent(event.traceparent);
  const span = activeTracer.startSpan(
    `process ${event.subject}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        [attr.messagingSystem]: "nats",
        [attr.destination]: event.subject,
        [attr.operationType]: "process",
        [attr.messageId]: event.eventId,
        [attr.consumerGroup]: consumer,
        [attr.deliveryCount]: event.deliveryCount,
      },
    },
    parent,
  );
  const inSpan = requestInSpan(rc, span);
  return context.with(trace.setSpan(parent, span), () => runWithRequest(inSpan, fn)).then(
    (v) => {
      endWithCode(span, SpanKind.CONSUMER, 0);
      return v;
    },
    (err: unknown) => {
      endWithCode(span, SpanKind.CONSUMER, grpcCodeOf(err), messageOf(err));
      throw err;
    },
  );
}
