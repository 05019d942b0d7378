/**
 * The gRPC (h2c) path: the platform's composed methods served straight on
 * node:http2. It owns no socket; the listener hands it each HTTP/2
 * connection, which an `Http2Server` that never listens takes as if it had
 * accepted it.
 *
 * Why not grpc-js's Server: it spent about twice the CPU of a bare node:http2
 * server on a small unary call (its interceptor chain, Metadata objects,
 * per-call streams and trackers), and internal traffic is most of the
 * traffic. Here a unary call is: look the method up, read one frame, decode,
 * invoke, write the headers, one frame and the trailers. The framing is the
 * platform client's own (grpc-frames.ts); each call is a GrpcServerCall.
 */
import { ConnectError } from "@connectrpc/connect";
import http2 from "node:http2";
import type { Duplex } from "node:stream";
import { createDecoder } from "./codec.js";
import { timeoutOf, isGrpcProtoContentType, unknownMethodError } from "./grpc-request.js";
import { GrpcServerCall, type MethodRuntime } from "./grpc-server-call.js";
import { errorTrailerFields } from "./grpc-status.js";
import { isStreamResult, type PlatformMethod, type RpcResult } from "./pipeline.js";

/** Options of the gRPC path. */
export interface GrpcPathOptions {
  /** Largest request message accepted, after decompression. */
  readMaxBytes: number;
  /** Largest response message sent. */
  writeMaxBytes: number;
  /** Reports errors that are the server's fault (never the caller's). */
  onInternalError: (err: unknown, method: PlatformMethod) => void;
}

/** The gRPC path, ready to take connections. */
export interface GrpcPath {
  /** Serves one HTTP/2 connection (its preface not yet consumed). */
  inject(socket: Duplex): void;
  /** Sends GOAWAY on every connection so clients start no new calls here; cuts what is left after `graceMs`. */
  drain(graceMs: number): void;
  /** Closes every connection at once. */
  destroy(): void;
}

/**
 * Streams one connection may have open at once. It bounds what a single
 * client can make the server hold, far above what one needs: the platform
 * client keeps one connection per address and would queue calls beyond it,
 * and long-lived streams (notification subscriptions) share that connection.
 */
export const MAX_CONCURRENT_STREAMS = 10_000;

/**
 * Memory (in MB, node:http2's unit) one connection may hold in unsent and
 * unread frames before node refuses new streams. node's default (10 MB) is
 * less than a few calls with messages at the size limits (up to 256 MiB);
 * flow control already bounds what a client can make the server buffer.
 */
const MAX_SESSION_MEMORY_MB = 1024;

/** Serves one call of a method, once its stream has arrived. */
type Serve = (call: GrpcServerCall) => void;

/** Builds the gRPC path for `methods`. */
export function createGrpcPath(methods: readonly PlatformMethod[], options: GrpcPathOptions): GrpcPath {
  const routes = new Map<string, { rt: MethodRuntime; serve: Serve }>();
  for (const m of methods) {
    const rt: MethodRuntime = { method: m, decode: createDecoder(m.method.input), ...options };
    routes.set(m.path, { rt, serve: serverFor(m) });
  }
  const server = http2.createServer({ settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS }, maxSessionMemory: MAX_SESSION_MEMORY_MB });
  const sessions = new Set<http2.ServerHttp2Session>();
  let draining = false;
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (draining) session.close();
  });
  server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    if (!isGrpcProtoContentType(headers["content-type"])) {
      stream.on("error", () => undefined);
      stream.respond({ ":status": 415 }, { endStream: true });
      stream.resume();
      return;
    }
    const route = routes.get(headers[":path"] ?? "");
    const timeout = timeoutOf(headers);
    if (route === undefined || timeout instanceof ConnectError) {
      respondTrailersOnly(stream, timeout instanceof ConnectError ? timeout : unknownMethodError(headers[":path"]));
      return;
    }
    route.serve(new GrpcServerCall(stream, headers, route.rt, timeout));
  });
  return {
    inject: (socket) => server.emit("connection", socket),
    drain(graceMs) {
      draining = true;
      for (const session of sessions) session.close();
      setTimeout(() => {
        for (const session of sessions) session.destroy(undefined, http2.constants.NGHTTP2_CANCEL);
      }, graceMs).unref();
    },
    destroy() {
      for (const session of sessions) session.destroy();
    },
  };
}

/** How a call of `m` runs, by the method's kind: one request or a stream of them; one response or a stream. */
function serverFor(m: PlatformMethod): Serve {
  const invoke = (call: GrpcServerCall, input: unknown): RpcResult =>
    m.invoke({ service: m.service, method: m.method, ctx: call.startContext(), input, header: call.header });
  const respondOnce = (call: GrpcServerCall, result: RpcResult) => {
    if (isStreamResult(result)) return call.fail(new Error(`${m.path} returned a stream where a promise was expected`));
    result.then(
      (value) => call.respond(value),
      (err: unknown) => call.fail(err),
    );
  };
  const respondStream = (call: GrpcServerCall, result: RpcResult) => {
    if (!isStreamResult(result)) return call.fail(new Error(`${m.path} returned a promise where a stream was expected`));
    void call.respondStream(result);
  };
  switch (m.method.methodKind) {
    case "unary":
      return (call) => call.readSingle((input) => respondOnce(call, invoke(call, input)));
    case "server_streaming":
      return (call) => call.readSingle((input) => respondStream(call, invoke(call, input)));
    case "client_streaming":
      return (call) => respondOnce(call, invoke(call, call.requestStream()));
    case "bidi_streaming":
      return (call) => respondStream(call, invoke(call, call.requestStream()));
  }
}

/** Answers a stream that never became a call (unknown method, malformed timeout) with its status alone. */
function respondTrailersOnly(stream: http2.ServerHttp2Stream, error: ConnectError): void {
  stream.on("error", () => undefined);
  stream.respond({ ":status": 200, "content-type": "application/grpc+proto", ...errorTrailerFields(error, undefined) }, { endStream: true });
  // The request body, if any, is read and dropped.
  stream.resume();
}
