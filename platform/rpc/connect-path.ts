/**
 * The HTTP/1.1 path: connect-node serves gRPC-Web (browsers, Envoy) and the
 * Connect protocol (curl, fetch) through the same composed methods as the gRPC
 * path.
 *
 * connect-node reports a request body that fails to parse as INTERNAL, a
 * server fault; it is the caller's fault. Its parse step cannot be replaced, so
 * the response is corrected on its way out: only errors whose message starts
 * with connect's own "parse binary: " are touched, and they become
 * INVALID_ARGUMENT in each of the three encodings (Connect unary JSON, Connect
 * end-of-stream, gRPC-Web trailer).
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createConnectRouter, createContextValues, type HandlerContext, type MethodImpl } from "@connectrpc/connect";
import {
  compressionGzip,
  compressionBrotli,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import type { IncomingMessage, ServerResponse } from "node:http";
import { peerAddressKey } from "../auth/client-address.js";
import { decodedResponse } from "./encoded.js";
import { returnsStream, type PlatformMethod } from "./pipeline.js";

/** Options of the HTTP/1.1 path. */
export interface ConnectPathOptions {
  readMaxBytes: number;
  writeMaxBytes: number;
  /** Aborted when the server shuts down; connect aborts every handler context. */
  shutdownSignal: AbortSignal;
  onInternalError: (err: unknown, method: PlatformMethod) => void;
}

/** Serves one RPC request; returns false when the path is not an RPC's. */
export type ConnectPath = (req: IncomingMessage, res: ServerResponse) => boolean;

/** Builds the connect-node router for `methods`. */
export function createConnectPath(methods: readonly PlatformMethod[], options: ConnectPathOptions): ConnectPath {
  const router = createConnectRouter({
    readMaxBytes: options.readMaxBytes,
    writeMaxBytes: options.writeMaxBytes,
    shutdownSignal: options.shutdownSignal,
    acceptCompression: [compressionGzip, compressionBrotli],
  });
  for (const m of methods) {
    const invoke = (input: unknown, ctx: HandlerContext) =>
      m.invoke({ service: m.service, method: m.method, ctx, input, header: (name) => ctx.requestHeader.get(name) });
    // connect-node encodes the response itself: an encoded one (rpc/encoded.ts) is decoded for it.
    const output = m.method.output;
    const impl = returnsStream(m.method) ? invoke : (input: unknown, ctx: HandlerContext) => (invoke(input, ctx) as Promise<unknown>).then((out) => decodedResponse(output, out));
    router.rpc(m.method, impl as MethodImpl<DescMethod>);
  }
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const byPath = new Map(methods.map((m) => [m.path, m]));
  return (req, res) => {
    const path = req.url?.split("?", 2)[0] ?? "";
    const handler = handlers.get(path);
    if (handler === undefined) return false;
    const badQuery = req.method === "GET" ? badGetMessage(req.url ?? "") : undefined;
    if (badQuery !== undefined) {
      const body = JSON.stringify({ code: "invalid_argument", message: badQuery });
      res.writeHead(400, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
      return true;
    }
    const values = createContextValues().set(peerAddressKey, req.socket.remoteAddress);
    const uReq = universalRequestFromNodeRequest(req, res, undefined, values);
    handler(uReq)
      .then(correctParseErrors)
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        options.onInternalError(reason, byPath.get(path)!);
      });
    return true;
  };
}

/**
 * Why a Connect GET's `message` query parameter cannot be decoded, or
 * undefined. connect-node decodes `base64=1` messages outside its error
 * handling, so a bad one would answer 500 `internal` on every RPC; it is the
 * caller's fault and answered 400 `invalid_argument` here, before the call.
 */
export function badGetMessage(url: string): string | undefined {
  const query = new URLSearchParams(url.split("?", 2)[1] ?? "");
  if (query.get("base64") !== "1") return undefined;
  try {
    base64Decode(query.get("message") ?? "");
    return undefined;
  } catch {
    return 'message: is not base64 (or base64url), though the query says base64=1';
  }
}

const parsePrefix = "parse binary: ";
const decoder = new TextDecoder();
const encoder = new TextEncoder();

async function correctParseErrors(res: UniversalServerResponse): Promise<UniversalServerResponse> {
  const type = res.header?.get("content-type") ?? "";
  if (res.body === undefined) return res;
  if (res.status === 500 && type.startsWith("application/json")) {
    // Connect unary: the whole error is a small JSON body under an HTTP status.
    const parts: Uint8Array[] = [];
    for await (const c of res.body) parts.push(c);
    const body = Buffer.concat(parts);
    const fixed = rewriteJson(body);
    if (fixed === undefined) return { ...res, body: once(body) };
    const header = new Headers(res.header);
    header.set("content-length", String(fixed.length));
    return { ...res, status: 400, header, body: once(fixed) };
  }
  if (type.startsWith("application/grpc-web")) {
    return { ...res, body: mapChunks(res.body, (c) => rewriteEnvelope(c, 0x80, rewriteGrpcWebTrailer)) };
  }
  if (type.startsWith("application/connect+")) {
    return { ...res, body: mapChunks(res.body, (c) => rewriteEnvelope(c, 0x02, rewriteJson)) };
  }
  return res;
}

async function* once(chunk: Uint8Array): AsyncIterable<Uint8Array> {
  yield chunk;
}

async function* mapChunks(body: AsyncIterable<Uint8Array>, fn: (chunk: Uint8Array) => Uint8Array): AsyncIterable<Uint8Array> {
  for await (const c of body) yield fn(c);
}

/** Rewrites a final envelope (flag `flag`) whose payload `rewrite` changes. */
function rewriteEnvelope(chunk: Uint8Array, flag: number, rewrite: (payload: Uint8Array) => Uint8Array | undefined): Uint8Array {
  if (chunk.length < 5 || (chunk[0]! & flag) !== flag) return chunk;
  const len = new DataView(chunk.buffer, chunk.byteOffset + 1, 4).getUint32(0);
  if (len !== chunk.length - 5) return chunk;
  const payload = rewrite(chunk.subarray(5));
  if (payload === undefined) return chunk;
  const out = new Uint8Array(5 + payload.length);
  out[0] = chunk[0]!;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

function rewriteGrpcWebTrailer(payload: Uint8Array): Uint8Array | undefined {
  const text = decoder.decode(payload);
  if (!/^grpc-status: 13\r?$/m.test(text) || !/^grpc-message: parse%20binary/m.test(text)) return undefined;
  return encoder.encode(text.replace(/^grpc-status: 13/m, `grpc-status: ${Code.InvalidArgument}`));
}

function rewriteJson(payload: Uint8Array): Uint8Array | undefined {
  let json: { code?: string; message?: string; error?: { code?: string; message?: string } };
  try {
    json = JSON.parse(decoder.decode(payload)) as typeof json;
  } catch {
    return undefined;
  }
  const err = json.error ?? json;
  if (err.code !== "internal" || !err.message?.startsWith(parsePrefix)) return undefined;
  err.code = "invalid_argument";
  return encoder.encode(JSON.stringify(json));
}
