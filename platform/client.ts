/**
 * Clients for calling other Switchyard services from inside a handler. A call
 * made while serving a request carries that request's trace (`traceparent`),
 * its request id, and at most the time that remains of its deadline, so a
 * caller that gives up stops the whole chain instead of leaving work behind.
 *
 * The transport is connect's `Transport` speaking gRPC over `node:http2`
 * (see rpc/http2-transport.ts): one per target URL in the process,
 * long-lived HTTP/2 connections with keepalive, calls spread over every
 * address a DNS name resolves to, UNAVAILABLE retried for idempotent methods
 * within a budget. Propagation is done by connect interceptors, so more
 * (tracing, auth) can be stacked the same way.
 */
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type CallOptions, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { currentRequest, traceparentOf } from "./request-context.js";
import { createHttp2Transport } from "./rpc/http2-transport.js";
import { failedStream, returnsStream } from "./rpc/pipeline.js";
import { traceClientCalls } from "./telemetry/tracing.js";

/** Adds the current request's trace context and request id to outgoing calls. */
export const propagateRequestContext: Interceptor = (next) => (req) => {
  const rc = currentRequest();
  if (rc !== undefined) {
    if (!req.header.has("traceparent")) req.header.set("traceparent", traceparentOf(rc));
    if (!req.header.has("x-request-id")) req.header.set("x-request-id", rc.requestId);
  }
  return next(req);
};

/**
 * A gRPC (h2c) transport to another service, with context propagation, then
 * a CLIENT span per call (when tracing is on), then `interceptors` (e.g. a
 * service token source's) in order. Each transport owns
 * its connections: create one per target and keep it for the process's life.
 */
export function createServiceTransport(baseUrl: string, interceptors: Interceptor[] = []): Transport {
  return createHttp2Transport({ baseUrl, interceptors: [propagateRequestContext, traceClientCalls, ...interceptors] });
}

/**
 * A typed client whose every call is bounded by the current request's
 * deadline: `timeoutMs` becomes the smaller of the caller's own and what
 * remains; a call started after the deadline fails DEADLINE_EXCEEDED at once.
 */
export function createServiceClient<S extends DescService>(service: S, transport: Transport): Client<S> {
  const client = createClient(service, transport) as Record<string, (req: unknown, opts?: CallOptions) => unknown>;
  const bounded: Record<string, unknown> = {};
  for (const method of service.methods) {
    const call = client[method.localName]!;
    const streaming = returnsStream(method);
    bounded[method.localName] = (req: unknown, opts: CallOptions = {}) => {
      try {
        return call(req, withDeadline(opts));
      } catch (err) {
        // Fail the way the method would: a rejected promise, or a stream that throws.
        return streaming ? failedStream(err) : Promise.reject(err);
      }
    };
  }
  return bounded as Client<S>;
}

function withDeadline(opts: CallOptions): CallOptions {
  const deadline = currentRequest()?.deadline;
  if (deadline === undefined) return opts;
  const remaining = deadline - Date.now();
  if (remaining <= 0) throw new ConnectError("the request's deadline passed before this call started", Code.DeadlineExceeded);
  return { ...opts, timeoutMs: opts.timeoutMs === undefined ? remaining : Math.min(opts.timeoutMs, remaining) };
}
