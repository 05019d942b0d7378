/**
 * A Connect `Transport` speaking gRPC straight over `node:http2`: the
 * generated `Client<S>` API and connect `Interceptor`s on top, one HTTP/2
 * stream per call underneath, nothing in between.
 *
 * Why not a library client: connect-node's gRPC transport spends most of a
 * call in its async-iterable pipeline and abort signals (0.3–0.5× a grpc-js
 * client in bench/unary), and grpc-js's own client stack (resolving call,
 * load-balancing picker, filters, Metadata) costs about as much again as the
 * HTTP/2 stream it drives. A unary call here is: build the header object,
 * write one framed message, read one back, check the trailer.
 *
 * Connections come from a session pool (http2-pool.ts): long-lived, one per
 * address a DNS name resolves to, calls spread round robin, keepalive pings.
 * The deadline travels in `grpc-timeout` (which interceptors can read or
 * tighten) and is enforced here too. UNAVAILABLE is retried for methods whose
 * proto allows it, within a retry budget per target (retry-budget.ts), never
 * past the deadline; a call that never reached the network (no connection,
 * a session closing under it) is retried once whatever the method.
 */
import { create, fromBinary, isMessage, toBinary, type DescMessage, type DescMethod, type DescMethodStreaming, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type Interceptor,
  type StreamRequest,
  type StreamResponse,
  type Transport,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { runStreamingCall } from "@connectrpc/connect/protocol";
import { findTrailerError, parseTimeout, validateResponse } from "@connectrpc/connect/protocol-grpc";
import http2 from "node:http2";
import { createFrameReader, encodeFrame, type Frame } from "./grpc-frames.js";
import { headersFromHttp2 } from "./headers.js";
import { createSessionPool, type SessionPool } from "./http2-pool.js";
import { createRetryBudget, type RetryBudget } from "./retry-budget.js";

/** Options of an HTTP/2 gRPC transport. */
export interface Http2TransportOptions {
  /** `http://host:port` of the target; a DNS name is resolved to all its addresses. */
  readonly baseUrl: string;
  /** Connect interceptors, outermost first. */
  readonly interceptors?: readonly Interceptor[];
  /** Largest message received (default 4 MiB). */
  readonly maxMessageBytes?: number;
  /** Milliseconds between keepalive pings (default 30000). */
  readonly keepaliveMs?: number;
}

/** A transport that also owns its connections. */
export interface ServiceTransport extends Transport {
  /** Closes every connection (calls in progress fail). */
  close(): void;
}

/** Header names this transport writes itself; never copied from the caller's. */
const reservedHeaders = new Set(["user-agent", "content-type", "te", "grpc-encoding", "grpc-accept-encoding", "host", "connection"]);
const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR } = http2.constants;
const userAgent = `switchyard-node/${process.versions.node}`;

/** Handed to interceptors when the caller gave no signal: calls end by deadline or result. */
const neverAborted = new AbortController().signal;

/** Creates the transport (see the module comment). */
export function createHttp2Transport(options: Http2TransportOptions): ServiceTransport {
  const pool = createSessionPool({ baseUrl: options.baseUrl, keepaliveMs: options.keepaliveMs });
  const maxBytes = options.maxMessageBytes ?? 4 * 1024 * 1024;
  const interceptors = [...(options.interceptors ?? [])];
  const budget = createRetryBudget();
  const baseUrl = options.baseUrl.replace(/\/$/, "");
  const codecs = new WeakMap<DescMethod, Codec>();
  const codecOf = (method: DescMethod): Codec => {
    let c = codecs.get(method);
    if (c === undefined) codecs.set(method, (c = createCodec(method)));
    return c;
  };
  const target: Target = { pool, budget, maxBytes, authority: new URL(baseUrl).host };
  const unaryChain = applyInterceptors((req) => unaryWithRetry(target, codecOf(req.method), req as UnaryRequest), interceptors);
  const streamNext = (req: UnaryRequest | StreamRequest) => startStream(target, codecOf(req.method), req as StreamRequest);

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      const req: UnaryRequest<I, O> = {
        stream: false,
        service: method.parent,
        method,
        requestMethod: "POST",
        url: `${baseUrl}/${method.parent.typeName}/${method.name}`,
        signal: signal ?? neverAborted,
        header: requestHeader(header, timeoutMs),
        contextValues: contextValues ?? createContextValues(),
        message: (isMessage(input, method.input) ? input : create(method.input, input)) as MessageShape<I>,
      };
      try {
        return (await unaryChain(req)) as UnaryResponse<I, O>;
      } catch (err) {
        throw ConnectError.from(err);
      }
    },
    stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      return runStreamingCall<I, O>({
        interceptors,
        signal,
        timeoutMs,
        req: {
          stream: true,
          service: method.parent,
          method,
          requestMethod: "POST",
          url: `${baseUrl}/${method.parent.typeName}/${method.name}`,
          header: requestHeader(header, timeoutMs),
          contextValues: contextValues ?? createContextValues(),
          message: input,
        },
        next: streamNext as unknown as (req: StreamRequest<I, O>) => Promise<StreamResponse<I, O>>,
      });
    },
    close: () => pool.close(),
  };
}

/** What every call to one target shares. */
interface Target {
  readonly pool: SessionPool;
  readonly budget: RetryBudget;
  readonly maxBytes: number;
  readonly authority: string;
}

type AnyFn = (req: UnaryRequest | StreamRequest) => Promise<UnaryResponse | StreamResponse>;

/** connect's interceptor order: the first interceptor is the outermost. */
function applyInterceptors(next: AnyFn, interceptors: readonly Interceptor[]): AnyFn {
  return interceptors.reduceRight<AnyFn>((n, interceptor) => interceptor(n), next);
}

/** The caller's headers plus `grpc-timeout`, as connect's gRPC transport sends them. */
function requestHeader(init: HeadersInit | undefined, timeoutMs: number | undefined): Headers {
  const h = new Headers(init);
  if (timeoutMs !== undefined) h.set("grpc-timeout", `${Math.max(0, Math.ceil(timeoutMs))}m`);
  return h;
}

interface Codec {
  readonly path: string;
  readonly serialize: (value: unknown) => Uint8Array;
  readonly deserialize: (bytes: Uint8Array) => unknown;
}

function createCodec(method: DescMethod): Codec {
  const input = method.input as DescMessage;
  const output = method.output as DescMessage;
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    serialize: (value) => toBinary(input, value as MessageShape<DescMessage>),
    deserialize: (bytes) => {
      try {
        return fromBinary(output, bytes);
      } catch (err) {
        throw new ConnectError(`the server's response is not a valid ${output.typeName}: ${String(err)}`, Code.Internal);
      }
    },
  };
}

/** The HTTP/2 request headers of a call, and its deadline (epoch ms) when it has one. */
function http2Headers(target: Target, codec: Codec, header: Headers): { headers: http2.OutgoingHttpHeaders; deadline: number | undefined } {
  const headers: http2.OutgoingHttpHeaders = {
    ":method": "POST",
    ":path": codec.path,
    ":authority": target.authority,
    "content-type": "application/grpc+proto",
    te: "trailers",
    "user-agent": userAgent,
  };
  let deadline: number | undefined;
  header.forEach((value, key) => {
    if (reservedHeaders.has(key)) return;
    if (key === "grpc-timeout") {
      const parsed = parseTimeout(value, Number.MAX_SAFE_INTEGER);
      if (parsed.timeoutMs !== undefined) deadline = Date.now() + parsed.timeoutMs;
    }
    headers[key] = value;
  });
  return { headers, deadline };
}

/** The client never asks for compression (it sends no grpc-accept-encoding), so a compressed message is the server's error. */
function uncompressed(frame: Frame): Buffer {
  if (frame.compressed) throw new ConnectError("the server sent a compressed message the client did not ask for", Code.Internal);
  return frame.message;
}

/**
 * Failures before the request reached the network: safe to send again,
 * whatever the method. (A set, not a subclass: ConnectError's `instanceof`
 * accepts any ConnectError.)
 */
const notSent = new WeakSet<ConnectError>();

function notSentError(message: string): ConnectError {
  const err = new ConnectError(message, Code.Unavailable);
  notSent.add(err);
  return err;
}

async function sessionFor(target: Target): Promise<http2.ClientHttp2Session> {
  const ready = target.pool.ready();
  if (ready !== undefined) return ready;
  try {
    return await target.pool.connect();
  } catch (err) {
    throw notSentError(`could not connect to ${target.authority}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Opens the call's stream, or fails (not sent) when the session cannot take one. */
function openStream(target: Target, session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): http2.ClientHttp2Stream {
  try {
    return session.request(headers, { endStream: false });
  } catch (err) {
    // The session is closing (GOAWAY) or out of stream ids: retire it, the call never left.
    session.close();
    throw notSentError(`the connection to ${target.authority} could not take the call: ${String(err)}`);
  }
}

async function unaryWithRetry(target: Target, codec: Codec, req: UnaryRequest): Promise<UnaryResponse> {
  const { headers, deadline } = http2Headers(target, codec, req.header);
  const frame = encodeFrame(codec.serialize(req.message));
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await unaryOnce(target, codec, req, headers, frame, deadline);
      target.budget.record(undefined);
      return res;
    } catch (err) {
      const code = err instanceof ConnectError ? err.code : Code.Unknown;
      target.budget.record(code);
      const unsent = err instanceof ConnectError && notSent.has(err);
      const retry = (unsent && attempt === 1) || target.budget.mayRetry(req.method, code, attempt);
      if (!retry || req.signal.aborted) throw err;
      const wait = unsent ? 0 : target.budget.backoffMs(attempt);
      if (deadline !== undefined && Date.now() + wait >= deadline) throw err;
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

async function unaryOnce(
  target: Target,
  codec: Codec,
  req: UnaryRequest,
  headers: http2.OutgoingHttpHeaders,
  frame: Buffer,
  deadline: number | undefined,
): Promise<UnaryResponse> {
  const session = await sessionFor(target);
  // Aborted while a connection was being made: the call never left.
  if (req.signal.aborted) throw ConnectError.from(req.signal.reason, Code.Canceled);
  if (deadline !== undefined) headers["grpc-timeout"] = `${Math.max(0, deadline - Date.now())}m`;
  const stream = openStream(target, session, headers);
  const untrack = target.pool.track(session);
  return new Promise((resolve, reject) => {
    const reader = createFrameReader(target.maxBytes, "the server");
    let message: Uint8Array | undefined;
    let response: http2.IncomingHttpHeaders | undefined;
    let trailers: http2.IncomingHttpHeaders | undefined;
    let failure: ConnectError | undefined;
    const fail = (err: ConnectError) => {
      failure ??= err;
      stream.close(NGHTTP2_CANCEL);
    };
    const timer =
      deadline === undefined ? undefined : setTimeout(() => fail(new ConnectError("the call's deadline passed", Code.DeadlineExceeded)), Math.max(0, deadline - Date.now()));
    const onAbort = () => fail(ConnectError.from(req.signal.reason, Code.Canceled));
    if (req.signal !== neverAborted) req.signal.addEventListener("abort", onAbort, { once: true });
    stream.on("response", (h) => (response = h));
    stream.on("data", (chunk: Buffer) => {
      try {
        for (const f of reader.push(chunk)) {
          if (message !== undefined) throw new ConnectError("the server sent more than one message for a unary call", Code.Unimplemented);
          message = uncompressed(f);
        }
      } catch (err) {
        fail(ConnectError.from(err));
      }
    });
    stream.on("trailers", (t) => (trailers = t));
    stream.on("error", () => undefined); // "close" below says what happened
    stream.on("close", () => {
      untrack();
      if (timer !== undefined) clearTimeout(timer);
      if (req.signal !== neverAborted) req.signal.removeEventListener("abort", onAbort);
      try {
        const statusHeaders = failure !== undefined ? undefined : checkStatus(target, session, stream, response, trailers);
        if (failure !== undefined) throw failure;
        if (message === undefined) throw new ConnectError("the server sent no response message", Code.Unimplemented);
        const res = { stream: false, service: req.service, method: req.method, message: codec.deserialize(message) as MessageShape<DescMessage> };
        resolve(lazyHeaders(res, () => headersFromHttp2(response), () => statusHeaders ?? headersFromHttp2(trailers)) as UnaryResponse);
      } catch (err) {
        reject(err);
      }
    });
    stream.end(frame);
  });
}

/**
 * The call's outcome from what the server sent: throws its error, or returns
 * the headers holding its OK status (undefined in the common case, where
 * nobody needs them built).
 */
function checkStatus(
  target: Target,
  session: http2.ClientHttp2Session,
  stream: http2.ClientHttp2Stream,
  response: http2.IncomingHttpHeaders | undefined,
  trailers: http2.IncomingHttpHeaders | undefined,
): Headers | undefined {
  if (response === undefined) throw streamFailure(target, session, stream);
  if (trailers?.["grpc-status"] === "0" && Number(response[":status"]) === 200) return undefined;
  const header = headersFromHttp2(response);
  const { foundStatus, headerError } = validateResponse(Number(response[":status"]), header);
  if (headerError !== undefined) throw headerError;
  if (foundStatus) return header;
  if (trailers === undefined) throw streamFailure(target, session, stream);
  const trailer = headersFromHttp2(trailers);
  const err = findTrailerError(trailer);
  if (err !== undefined) throw err;
  if (!trailer.has("grpc-status")) throw new ConnectError("the server ended the call without a gRPC status", Code.Internal);
  return trailer;
}

/** Why a stream ended without a status, as gRPC's HTTP/2 error mapping says. */
function streamFailure(target: Target, session: http2.ClientHttp2Session, stream: http2.ClientHttp2Stream): ConnectError {
  if (session.destroyed || session.closed) return new ConnectError(`the connection to ${target.authority} was lost during the call`, Code.Unavailable);
  switch (stream.rstCode) {
    case NGHTTP2_REFUSED_STREAM:
      return notSentError(`${target.authority} refused the call before running it`);
    case NGHTTP2_CANCEL:
      return new ConnectError(`${target.authority} cancelled the call`, Code.Canceled);
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return new ConnectError(`${target.authority} asked the client to slow down`, Code.ResourceExhausted);
    case NGHTTP2_NO_ERROR:
    case undefined:
      return new ConnectError(`${target.authority} ended the call without a gRPC status`, Code.Internal);
    default:
      return new ConnectError(`${target.authority} reset the call (HTTP/2 error ${stream.rstCode})`, Code.Internal);
  }
}

/** Response headers built only when an interceptor or caller asks (most never do). */
function lazyHeaders<T extends object>(target: T, header: () => Headers, trailer: () => Headers): T {
  let h: Headers | undefined;
  let t: Headers | undefined;
  Object.defineProperty(target, "header", { enumerable: true, get: () => (h ??= header()) });
  Object.defineProperty(target, "trailer", { enumerable: true, get: () => (t ??= trailer()) });
  return target;
}

/** Starts a streaming call; resolves once the server's headers (or its final status) arrive. */
async function startStream(target: Target, codec: Codec, req: StreamRequest): Promise<StreamResponse> {
  const { headers } = http2Headers(target, codec, req.header);
  const session = await sessionFor(target);
  if (req.signal.aborted) throw ConnectError.from(req.signal.reason, Code.Canceled);
  const stream = openStream(target, session, headers);
  const untrack = target.pool.track(session);
  const trailer = new Headers();
  let trailers: http2.IncomingHttpHeaders | undefined;
  const closed = new Promise<void>((resolve) => stream.once("close", resolve)).then(untrack);
  stream.on("trailers", (t) => {
    trailers = t;
    headersFromHttp2(t).forEach((v, k) => trailer.append(k, v));
  });
  stream.on("error", () => undefined); // the status check after "close" says what happened
  const cancel = () => stream.close(NGHTTP2_CANCEL);
  req.signal.addEventListener("abort", cancel, { once: true });
  void closed.then(() => req.signal.removeEventListener("abort", cancel));
  void writeAll(codec, stream, req.message);

  const response = await new Promise<http2.IncomingHttpHeaders | undefined>((resolve) => {
    stream.once("response", resolve);
    stream.once("close", () => resolve(undefined));
  });
  const header = headersFromHttp2(response);
  if (response === undefined) {
    await closed;
    throw streamFailure(target, session, stream);
  }
  const { foundStatus, headerError } = validateResponse(Number(response[":status"]), header);
  if (headerError !== undefined) {
    cancel();
    throw headerError;
  }
  async function* messages(): AsyncGenerator<unknown> {
    const reader = createFrameReader(target.maxBytes, "the server");
    let readToEnd = false;
    try {
      for await (const chunk of stream) for (const f of reader.push(chunk as Buffer)) yield codec.deserialize(uncompressed(f));
      readToEnd = true;
    } catch (err) {
      if (err instanceof ConnectError) throw err;
      // a reset stream: the status check below says why
    } finally {
      // The caller stopped reading early (or a message was refused): end the call.
      if (!readToEnd && !stream.closed) cancel();
    }
    await closed;
    if (req.signal.aborted) throw ConnectError.from(req.signal.reason, Code.Canceled);
    if (foundStatus) return;
    if (trailers === undefined) throw streamFailure(target, session, stream);
    const err = findTrailerError(trailer);
    if (err !== undefined) throw err;
    if (reader.partial) throw new ConnectError("the server ended the stream in the middle of a message", Code.Internal);
  }
  return {
    stream: true,
    service: req.service,
    method: req.method,
    header,
    trailer,
    message: messages() as AsyncIterable<MessageShape<DescMessage>>,
  } as StreamResponse;
}

/** Writes the request messages, honouring the stream's backpressure; a failing source cancels the call. */
async function writeAll(codec: Codec, stream: http2.ClientHttp2Stream, input: AsyncIterable<unknown>): Promise<void> {
  try {
    for await (const m of input) {
      if (stream.closed) return;
      if (!stream.write(encodeFrame(codec.serialize(m)))) await new Promise((resolve) => stream.once("drain", resolve).once("close", resolve));
    }
    if (!stream.closed) stream.end();
  } catch {
    if (!stream.closed) stream.close(NGHTTP2_CANCEL);
  }
}
