/**
 * The platform's call pipeline: one chain of middleware per RPC, built once at
 * start, that every protocol path (gRPC over h2c on node:http2; gRPC-Web and
 * Connect through connect-node) invokes in the same way. Auth, limits, logs,
 * metrics, deadlines and validation are middleware, so they apply identically
 * whichever protocol a call arrives on.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";

/** The four shapes of an RPC. */
export type MethodKind = DescMethod["methodKind"];

/** One call as the middleware sees it. */
export interface RpcCall {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly ctx: HandlerContext;
  /** A message for unary and server-streaming RPCs; an AsyncIterable of messages otherwise. */
  readonly input: unknown;
  /**
   * Reads one request header (the first value) without building the whole
   * `ctx.requestHeader`, which on the gRPC path is a copy of the metadata.
   */
  readonly header: (name: string) => string | null;
}

/**
 * What a handler returns: a promise of one message (unary, client-streaming)
 * or an async iterable of messages (server-streaming, bidi).
 */
export type RpcResult = Promise<unknown> | AsyncIterable<unknown>;

/** A step of the chain. */
export type RpcHandler = (call: RpcCall) => RpcResult;

/**
 * A middleware is asked once per method, at start, for the handler it puts in
 * front of `next`; it may return `next` itself to stay out of that method's way
 * (so a method pays only for the middleware that applies to it).
 */
export type Middleware = (method: DescMethod, next: RpcHandler) => RpcHandler;

/** A service and its implementation, as a service module registers them. */
export interface ServiceRegistration {
  readonly service: DescService;
  readonly impl: object;
}

/** Pairs a service with its (typed, possibly partial) implementation. */
export function register<S extends DescService>(service: S, impl: Partial<ServiceImpl<S>>): ServiceRegistration {
  return { service, impl };
}

/** A method ready to serve: its descriptors and its composed chain. */
export interface PlatformMethod {
  readonly service: DescService;
  readonly method: DescMethod;
  /** "/package.Service/Method", as both gRPC and Connect route it. */
  readonly path: string;
  readonly invoke: RpcHandler;
}

/** "/package.Service/Method": the path gRPC, gRPC-Web, Connect and Envoy route an RPC by. */
export function rpcPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** Whether `method` answers with a stream (server-streaming and bidi RPCs). */
export function returnsStream(method: DescMethod): boolean {
  return method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";
}

/** A stream that fails with `err` when first read: how a streaming RPC fails before it starts. */
export async function* failedStream(err: unknown): AsyncIterable<never> {
  throw err;
}

/**
 * A handler that passes a call on only once `check(call)` settles without
 * throwing; for a stream, the check runs when the stream is first read. A
 * check that returns undefined lets the call through at once. This is the
 * shape of every gate (token check, rate limit) on either kind of result.
 */
export function afterCheck(method: DescMethod, check: (call: RpcCall) => Promise<void> | undefined, next: RpcHandler): RpcHandler {
  if (returnsStream(method)) {
    return (call) =>
      (async function* checked() {
        await check(call);
        yield* next(call) as AsyncIterable<unknown>;
      })();
  }
  return (call) => {
    const pending = check(call);
    return pending === undefined ? next(call) : pending.then(() => next(call) as Promise<unknown>);
  };
}

/** Whether a result is a stream (server-streaming and bidi RPCs). */
export function isStreamResult(result: RpcResult): result is AsyncIterable<unknown> {
  return typeof (result as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function";
}

/**
 * Runs `onEnd` once when a call's result settles: after the promise resolves or
 * rejects, or after the stream ends, fails or is abandoned by the transport.
 * The result is passed through unchanged in kind.
 */
export function observeResult(result: RpcResult, onEnd: (error: unknown) => void): RpcResult {
  if (!isStreamResult(result)) {
    return result.then(
      (value) => {
        onEnd(undefined);
        return value;
      },
      (err: unknown) => {
        onEnd(err);
        throw err;
      },
    );
  }
  return (async function* observed() {
    let error: unknown;
    try {
      yield* result;
    } catch (err) {
      error = err;
      throw err;
    } finally {
      onEnd(error);
    }
  })();
}

/**
 * Composes the middleware around every method of the registered services.
 * A method with no implementation falls through to `unimplemented`, so an
 * unbuilt RPC answers UNIMPLEMENTED on every path, through the same chain.
 */
export function createPlatformMethods(
  registrations: readonly ServiceRegistration[],
  middleware: readonly Middleware[],
  unimplemented: (method: DescMethod) => RpcHandler,
): PlatformMethod[] {
  const methods: PlatformMethod[] = [];
  for (const { service, impl } of registrations) {
    for (const method of service.methods) {
      const fn = (impl as Record<string, ((input: unknown, ctx: HandlerContext) => unknown) | undefined>)[method.localName];
      let handler: RpcHandler = guard(
        method,
        fn === undefined ? unimplemented(method) : terminal(method, fn.bind(impl)),
      );
      for (let i = middleware.length - 1; i >= 0; i--) handler = guard(method, middleware[i]!(method, handler));
      methods.push({ service, method, path: rpcPath(method), invoke: handler });
    }
  }
  return methods;
}

function terminal(method: DescMethod, fn: (input: unknown, ctx: HandlerContext) => unknown): RpcHandler {
  switch (method.methodKind) {
    case "unary":
    case "client_streaming":
      // Promise.resolve, not an async wrapper: the handler's own promise passes
      // through as it is, without the extra promise and microtask hops an
      // `async` function resolving to a promise costs (guard turns a sync throw into a rejection).
      return (call) => Promise.resolve(fn(call.input, call.ctx));
    case "server_streaming":
    case "bidi_streaming":
      return (call) => fn(call.input, call.ctx) as AsyncIterable<unknown>;
  }
}

/**
 * Turns a synchronous throw into the failure of the result kind the method
 * returns, so no middleware or transport has to expect both.
 */
function guard(method: DescMethod, handler: RpcHandler): RpcHandler {
  const streaming = returnsStream(method);
  return (call) => {
    try {
      return handler(call);
    } catch (err) {
      return streaming ? failedStream(err) : Promise.reject(err);
    }
  };
}
