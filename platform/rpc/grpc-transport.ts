/**
 * A Connect `Transport` over a grpc-js channel: the generated `Client<S>`
 * API and connect `Interceptor`s on top, grpc-js's HTTP/2 client underneath.
 *
 * Why grpc-js and not connect-node's gRPC transport: connect-node spends
 * most of a call in its async-iterable pipeline and abort signals (about
 * 0.3–0.5× a grpc-js client, measured in bench/unary); grpc-js keeps one
 * long-lived HTTP/2 connection per address with keepalive, resolves DNS
 * names and, with the round_robin policy, spreads calls over every address a
 * name resolves to (a Kubernetes headless service), re-resolving when a
 * connection drops.
 *
 * Unary calls take a light path: the interceptor chain is built once per
 * transport and a call allocates no AbortController of its own (the deadline
 * travels as grpc-js's deadline and in the `grpc-timeout` header, which
 * interceptors can read or tighten). Streaming calls go through connect's
 * `runStreamingCall`. Both apply the interceptors the way every connect
 * transport does, so an interceptor written for connect (tracing, auth)
 * works here unchanged.
 *
 * UNAVAILABLE is retried for methods whose proto allows it, within a retry
 * budget per target (see retry-budget.ts), and never past the deadline.
 */
import { create, fromBinary, isMessage, toBinary, type DescMessage, type DescMethod, type DescMethodStreaming, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  decodeBinaryHeader,
  type ContextValues,
  type Interceptor,
  type StreamRequest,
  type StreamResponse,
  type Transport,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { runStreamingCall } from "@connectrpc/connect/protocol";
import { findTrailerError, parseTimeout } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";
import { headersFromMetadata } from "./headers.js";
import { createRetryBudget, type RetryBudget } from "./retry-budget.js";

/** Options of a channel transport. */
export interface GrpcChannelTransportOptions {
  /** `http://host:port` of the target; a DNS name is resolved to all its addresses. */
  readonly baseUrl: string;
  /** Connect interceptors, outermost first. */
  readonly interceptors?: readonly Interceptor[];
  /** Largest message sent or received (default 4 MiB). */
  readonly maxMessageBytes?: number;
  /** Milliseconds between keepalive pings (default 30000). */
  readonly keepaliveMs?: number;
}

/** A transport that also owns its channel. */
export interface GrpcChannelTransport extends Transport {
  /** Closes the channel (calls in progress fail). */
  close(): void;
}

/** Header names the channel writes itself; never copied into metadata. */
const reservedHeaders = new Set(["user-agent", "content-type", "te", "grpc-encoding", "grpc-accept-encoding"]);

/** Turns `http://host:port` into a grpc-js target. */
export function grpcTarget(baseUrl: string): string {
  const url = new URL(baseUrl);
  if (url.protocol !== "http:") throw new Error(`${baseUrl}: only cleartext h2c (http://) is supported for internal calls`);
  const port = url.port || "80";
  const host = url.hostname;
  if (host.startsWith("[")) return `ipv6:${host}:${port}`;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) return `ipv4:${host}:${port}`;
  return `dns:///${host}:${port}`;
}

/** Creates the transport (see the module comment). */
export function createGrpcChannelTransport(options: GrpcChannelTransportOptions): GrpcChannelTransport {
  const maxBytes = options.maxMessageBytes ?? 4 * 1024 * 1024;
  const keepaliveMs = options.keepaliveMs ?? 30_000;
  const client = new grpc.Client(grpcTarget(options.baseUrl), grpc.credentials.createInsecure(), {
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
    "grpc.keepalive_time_ms": keepaliveMs,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_send_message_length": maxBytes,
    "grpc.max_receive_message_length": maxBytes,
    // Retries are ours (below the interceptors, within the budget); grpc-js
    // still retries transparently calls that never left this process.
    "grpc.enable_retries": 0,
  });
  const interceptors = [...(options.interceptors ?? [])];
  const budget = createRetryBudget();
  const baseUrl = options.baseUrl.replace(/\/$/, "");
  const codecs = new WeakMap<DescMethod, Codec>();
  const codecOf = (method: DescMethod): Codec => {
    let c = codecs.get(method);
    if (c === undefined) codecs.set(method, (c = createCodec(method)));
    return c;
  };
  const unaryChain = applyInterceptors((req) => unaryWithRetry(client, budget, codecOf(req.method), req as UnaryRequest), interceptors);
  const streamNext = (req: UnaryRequest | StreamRequest) => startStream(client, codecOf(req.method), req as StreamRequest);

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
    close: () => client.close(),
  };
}

/** Handed to interceptors when the caller gave no signal: calls end by deadline or result. */
const neverAborted = new AbortController().signal;

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
  readonly serialize: (value: unknown) => Buffer;
  readonly deserialize: (bytes: Buffer) => unknown;
}

function createCodec(method: DescMethod): Codec {
  const input = method.input as DescMessage;
  const output = method.output as DescMessage;
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    serialize: (value) => {
      const bytes = toBinary(input, value as MessageShape<DescMessage>);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
    deserialize: (bytes) => fromBinary(output, bytes),
  };
}

/** The deadline and metadata a call's headers ask for. */
function callSetup(req: UnaryRequest | StreamRequest): { metadata: grpc.Metadata; options: grpc.CallOptions } {
  const options: grpc.CallOptions = {};
  const metadata = new grpc.Metadata();
  req.header.forEach((value, key) => {
    if (key === "grpc-timeout") {
      const parsed = parseTimeout(value, Number.MAX_SAFE_INTEGER);
      if (parsed.timeoutMs !== undefined) options.deadline = Date.now() + parsed.timeoutMs;
    } else if (!reservedHeaders.has(key)) {
      if (key.endsWith("-bin")) for (const part of value.split(/,\s*/)) metadata.add(key, Buffer.from(decodeBinaryHeader(part)));
      else metadata.add(key, value);
    }
  });
  return { metadata, options };
}

/** Headers read from grpc-js metadata only when an interceptor or caller asks (most never do). */
function lazyHeaders<T extends object>(target: T, fields: Record<string, () => grpc.Metadata | undefined>): T {
  for (const [name, source] of Object.entries(fields)) {
    let value: Headers | undefined;
    Object.defineProperty(target, name, {
      enumerable: true,
      get: () => {
        if (value === undefined) {
          const m = source();
          value = m === undefined ? new Headers() : headersFromMetadata(m);
        }
        return value;
      },
    });
  }
  return target;
}

/** A grpc-js failure as the ConnectError connect's own transports raise (details included). */
function connectErrorOf(status: grpc.StatusObject): ConnectError {
  const trailer = headersFromMetadata(status.metadata);
  trailer.set("grpc-status", String(status.code));
  trailer.set("grpc-message", encodeURIComponent(status.details));
  return findTrailerError(trailer) ?? new ConnectError(status.details, status.code as number as Code, trailer);
}

async function unaryWithRetry(client: grpc.Client, budget: RetryBudget, codec: Codec, req: UnaryRequest): Promise<UnaryResponse> {
  const { metadata, options } = callSetup(req);
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await unaryOnce(client, codec, req, metadata, options);
      budget.record(undefined);
      return res;
    } catch (err) {
      const code = err instanceof ConnectError ? err.code : Code.Unknown;
      budget.record(code);
      if (!budget.mayRetry(req.method, code, attempt) || req.signal.aborted) throw err;
      const wait = budget.backoffMs(attempt);
      if (options.deadline !== undefined && Date.now() + wait >= (options.deadline as number)) throw err;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

function unaryOnce(client: grpc.Client, codec: Codec, req: UnaryRequest, metadata: grpc.Metadata, options: grpc.CallOptions): Promise<UnaryResponse> {
  return new Promise((resolve, reject) => {
    let message: unknown;
    let header: grpc.Metadata | undefined;
    const call = client.makeUnaryRequest(codec.path, codec.serialize, codec.deserialize, req.message, metadata, options, (_err, value) => {
      message = value;
    });
    const onAbort = () => call.cancel();
    if (req.signal !== neverAborted) req.signal.addEventListener("abort", onAbort, { once: true });
    call.on("metadata", (m: grpc.Metadata) => (header = m));
    call.on("status", (status: grpc.StatusObject) => {
      if (req.signal !== neverAborted) req.signal.removeEventListener("abort", onAbort);
      if (status.code !== grpc.status.OK || message === undefined) {
        if (status.code === grpc.status.CANCELLED && req.signal.aborted) {
          reject(ConnectError.from(req.signal.reason, Code.Canceled));
          return;
        }
        reject(status.code === grpc.status.OK ? new ConnectError("the server sent no response message", Code.Unimplemented) : connectErrorOf(status));
        return;
      }
      const res = { stream: false, service: req.service, method: req.method, message: message as MessageShape<DescMessage> };
      resolve(lazyHeaders(res, { header: () => header, trailer: () => status.metadata }) as UnaryResponse);
    });
  });
}

/** Starts a streaming call; resolves once the server's headers (or its final status) arrive. */
function startStream(client: grpc.Client, codec: Codec, req: StreamRequest): Promise<StreamResponse> {
  const { metadata, options } = callSetup(req);
  const call = client.makeBidiStreamRequest(codec.path, codec.serialize, codec.deserialize, metadata, options);
  const trailer = new Headers();
  let failure: ConnectError | undefined;
  const ended = new Promise<void>((resolve) =>
    call.on("status", (status: grpc.StatusObject) => {
      headersFromMetadata(status.metadata).forEach((v, k) => trailer.append(k, v));
      if (status.code !== grpc.status.OK) failure = connectErrorOf(status);
      resolve();
    }),
  );
  call.on("error", () => undefined); // reported through "status"
  req.signal.addEventListener("abort", () => call.cancel(), { once: true });
  void (async () => {
    try {
      for await (const m of req.message) {
        if (!call.write(m)) await new Promise((r) => call.once("drain", r));
      }
      call.end();
    } catch {
      call.cancel();
    }
  })();
  async function* messages(): AsyncGenerator<unknown> {
    try {
      for await (const m of call) yield m;
    } catch {
      // the status below says why
    }
    await ended;
    if (failure !== undefined) throw failure;
  }
  return new Promise((resolve, reject) => {
    const respond = (m: grpc.Metadata | undefined) =>
      resolve({
        stream: true,
        service: req.service,
        method: req.method,
        header: m === undefined ? new Headers() : headersFromMetadata(m),
        trailer,
        message: messages() as AsyncIterable<MessageShape<DescMessage>>,
      } as StreamResponse);
    call.once("metadata", respond);
    call.once("status", (status: grpc.StatusObject) => {
      if (status.code !== grpc.status.OK) reject(connectErrorOf(status));
      else respond(undefined);
    });
  });
}
