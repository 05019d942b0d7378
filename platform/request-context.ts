/**
 * What travels with a request through a process: its id, its W3C trace
 * context and its deadline. Handlers and outgoing clients read it from
 * AsyncLocalStorage, so a call made while serving a request carries the
 * request's trace and the time that remains of its deadline.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomHex } from "./random.js";

/** The context of the request being served. */
export interface RequestContext {
  /** Caller-supplied `x-request-id`, or a new one. */
  readonly requestId: string;
  /** 32 hex digits; the trace this request belongs to. */
  readonly traceId: string;
  /** 16 hex digits; this server's span within the trace. */
  readonly spanId: string;
  /** The W3C trace flags, two hex digits. */
  readonly traceFlags: string;
  /** Absolute deadline in epoch ms, if the caller set one. */
  readonly deadline: number | undefined;
}

const storage = new AsyncLocalStorage<RequestContext>();

/** The context of the request being served, if any. */
export function currentRequest(): RequestContext | undefined {
  return storage.getStore();
}

/** Runs `fn` with `ctx` as the current request context. */
export function runWithRequest<T>(ctx: RequestContext, fn: () => T): T {
  return storage.run(ctx, fn);
}

const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * Builds a request context from incoming headers: continues the caller's
 * trace when `traceparent` is valid (and not all zeros), else starts one.
 */
export function requestContextFrom(
  header: (name: string) => string | null,
  deadline: number | undefined,
): RequestContext {
  const match = traceparentPattern.exec(header("traceparent") ?? "");
  const traceId = match && !/^0+$/.test(match[1]!) ? match[1]! : randomHex(16);
  const spanId = randomHex(8);
  return { requestId: requestIdFrom(header, spanId), traceId, spanId, traceFlags: match?.[3] ?? "01", deadline };
}

/** The caller's `x-request-id` when it is a plain token of at most 128 characters, else `fallback` (the server's span id). */
export function requestIdFrom(header: (name: string) => string | null, fallback: string): string {
  const requestId = header("x-request-id");
  return requestId && /^[\w.:-]{1,128}$/.test(requestId) ? requestId : fallback;
}

/** The `traceparent` value an outgoing call made under `ctx` sends. */
export function traceparentOf(ctx: RequestContext): string {
  return `00-${ctx.traceId}-${ctx.spanId}-${ctx.traceFlags}`;
}
