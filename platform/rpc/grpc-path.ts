/**
 * The gRPC (h2c) path: a grpc-js Server fed with the protobuf-es descriptors
 * and the platform's composed methods. It owns no socket; the listener hands it
 * each HTTP/2 connection through a connection injector. grpc-js is the fastest
 * maintained gRPC server for Node (about 2.7x connect-node's gRPC handler here),
 * which matters because internal traffic is most of the traffic.
 */
import { create, isMessage, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";
import { once } from "node:events";
import type { Readable } from "node:stream";
import { addressOfPeer, peerAddressKey } from "../auth/client-address.js";
import { createCallContext, type CallContext, type CallSourceAccess } from "./call-context.js";
import { createDecoder, DecodeFailure } from "./codec.js";
import { wireFormOf } from "./encoded.js";
import { metadataFromHeaders, headersFromMetadata } from "./headers.js";
import { isStreamResult, type PlatformMethod } from "./pipeline.js";

/** Options of the gRPC path. */
export interface GrpcPathOptions {
  /** Largest request message accepted, after decompression. */
  readMaxBytes: number;
  /** Largest response message sent. */
  writeMaxBytes: number;
  /** Reports errors that are the server's fault (never the caller's). */
  onInternalError: (err: unknown, method: PlatformMethod) => void;
}

/** A grpc-js server ready to take injected connections. */
export interface GrpcPath {
  /** Serves one HTTP/2 connection (its preface not yet consumed). */
  inject(socket: import("node:stream").Duplex): void;
  /** Sends GOAWAY on every connection so clients start no new calls here. */
  drain(graceMs: number): void;
  /** Closes every connection at once. */
  destroy(): void;
}

/** Builds the grpc-js server for `methods`. */
export function createGrpcPath(methods: readonly PlatformMethod[], options: GrpcPathOptions): GrpcPath {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.readMaxBytes,
    "grpc.max_send_message_length": options.writeMaxBytes,
    // Nothing reads channelz (no channelz service is served), and it costs
    // every call a tracker object, counters and Date.now() calls.
    "grpc.enable_channelz": 0,
  });
  for (const m of methods) {
    server.register(m.path, createHandler(m, options), serializer(m.method.output), createDecoder(m.method.input), kindOf(m));
  }
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  return {
    inject: (socket) => injector.injectConnection(socket),
    drain: (graceMs) => injector.drain(graceMs),
    destroy: () => injector.destroy(),
  };
}

function kindOf(m: PlatformMethod): string {
  switch (m.method.methodKind) {
    case "unary":
      return "unary";
    case "server_streaming":
      return "serverStream";
    case "client_streaming":
      return "clientStream";
    case "bidi_streaming":
      return "bidi";
  }
}

function serializer(schema: DescMessage) {
  return (value: unknown): Buffer => {
    const encoded = wireFormOf(value);
    if (encoded !== undefined) return Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength);
    const msg = isMessage(value, schema) ? value : create(schema, value as never);
    const bytes = toBinary(schema, msg);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> &
  Partial<grpc.ServerWritableStream<unknown, unknown>> &
  Partial<grpc.ServerReadableStream<unknown, unknown>>;

/** How a context reads a grpc-js call: shared by every call, so a context costs no closures. */
const grpcCallAccess: CallSourceAccess<AnyCall> = {
  readHeaders: (call) => headersFromMetadata(call.metadata),
  lazyValues: new Map([[peerAddressKey.id, (call: AnyCall) => addressOfPeer(call.getPeer())]]),
  onCancel(call, abort) {
    if (call.cancelled) abort();
    else call.once("cancelled", abort);
  },
};

function contextFor(m: PlatformMethod, call: AnyCall): CallContext {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return createCallContext({
    service: m.service,
    method: m.method,
    protocolName: "grpc",
    url: m.path,
    deadline: Number.isFinite(ms) ? ms : undefined,
    source: call,
    access: grpcCallAccess,
  });
}

/** The grpc-js status for an error, with handler trailers and error details. */
function statusFor(err: unknown, ctx: CallContext, m: PlatformMethod, options: GrpcPathOptions): grpc.StatusObject {
  let error: ConnectError;
  if (err instanceof ConnectError) {
    error = err;
  } else {
    options.onInternalError(err, m);
    error = new ConnectError("internal error", Code.Internal);
  }
  const trailer = ctx.hasResponseTrailer ? new Headers(ctx.responseTrailer) : new Headers();
  error.metadata.forEach((v, k) => trailer.append(k, v));
  setTrailerStatus(trailer, error); // adds grpc-status-details-bin when the error has details
  return { code: error.code as number, details: error.rawMessage, metadata: metadataFromHeaders(trailer) };
}

function headerReader(call: { metadata: grpc.Metadata }): (name: string) => string | null {
  return (name) => {
    const values = call.metadata.get(name);
    return values.length === 0 ? null : typeof values[0] === "string" ? values[0] : null;
  };
}

function trailerOf(ctx: CallContext): grpc.Metadata | undefined {
  return ctx.hasResponseTrailer ? metadataFromHeaders(ctx.responseTrailer) : undefined;
}

function sendHeaderIfSet(call: AnyCall, ctx: CallContext): void {
  if (ctx.hasResponseHeader) call.sendMetadata(metadataFromHeaders(ctx.responseHeader));
}

/**
 * The request messages of a client or bidi stream. Iterated without
 * `destroyOnReturn`: a plain `for await` destroys the whole duplex when the
 * client half-closes, and the status would never be sent.
 */
async function* requestStream(call: Readable): AsyncIterable<unknown> {
  for await (const msg of call.iterator({ destroyOnReturn: false })) {
    if (msg instanceof DecodeFailure) throw msg.error;
    yield msg;
  }
}

function createHandler(m: PlatformMethod, options: GrpcPathOptions): grpc.UntypedHandleCall {
  const streamingIn = m.method.methodKind === "client_streaming" || m.method.methodKind === "bidi_streaming";
  if (m.method.methodKind === "unary" || m.method.methodKind === "client_streaming") {
    return ((call: AnyCall, callback: grpc.sendUnaryData<unknown>) => {
      const ctx = contextFor(m, call);
      if (call.request instanceof DecodeFailure) {
        callback(statusFor(call.request.error, ctx, m, options));
        return;
      }
      const input = streamingIn ? requestStream(call as unknown as Readable) : call.request;
      (m.invoke({ service: m.service, method: m.method, ctx, input, header: headerReader(call) }) as Promise<unknown>).then(
        (out) => {
          sendHeaderIfSet(call, ctx);
          callback(null, out, trailerOf(ctx));
          ctx.abort(completed);
        },
        (err: unknown) => {
          callback(statusFor(err, ctx, m, options));
          ctx.abort(completed);
        },
      );
    }) as grpc.UntypedHandleCall;
  }
  return ((call: AnyCall & grpc.ServerWritableStream<unknown, unknown>) => {
    const ctx = contextFor(m, call);
    if (call.request instanceof DecodeFailure) {
      call.emit("error", statusFor(call.request.error, ctx, m, options));
      return;
    }
    const input = streamingIn ? requestStream(call as unknown as Readable) : call.request;
    void writeStream(call, ctx, m, input, options);
  }) as grpc.UntypedHandleCall;
}

const completed = new ConnectError("the call completed", Code.Canceled);

async function writeStream(
  call: grpc.ServerWritableStream<unknown, unknown>,
  ctx: CallContext,
  m: PlatformMethod,
  input: unknown,
  options: GrpcPathOptions,
): Promise<void> {
  let headerSent = false;
  try {
    const result = m.invoke({ service: m.service, method: m.method, ctx, input, header: headerReader(call) });
    if (!isStreamResult(result)) throw new Error(`${m.path} returned a promise where a stream was expected`);
    for await (const msg of result) {
      if (call.cancelled) return;
      if (!headerSent) {
        sendHeaderIfSet(call as unknown as AnyCall, ctx);
        headerSent = true;
      }
      if (!call.write(msg)) await once(call, "drain", { signal: ctx.signal }).catch(() => undefined);
    }
    if (call.cancelled) return;
    if (!headerSent) sendHeaderIfSet(call as unknown as AnyCall, ctx);
    call.end(trailerOf(ctx));
  } catch (err) {
    if (!call.cancelled) call.emit("error", statusFor(err, ctx, m, options));
  } finally {
    ctx.abort(completed);
  }
}
