/**
 * What the gRPC server path reads from a request before a handler runs: the
 * content type, the deadline (`grpc-timeout`), and the headers a handler may
 * see. Pure functions of the HTTP/2 header object, so they are tested
 * without a server.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { parseTimeout } from "@connectrpc/connect/protocol-grpc";
import type { IncomingHttpHeaders } from "node:http2";

/** Request headers that belong to the protocol, which a handler never sees. */
export const protocolRequestHeaders: ReadonlySet<string> = new Set(["grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "accept-encoding", "te", "content-type"]);

/**
 * Whether a content type is gRPC with protobuf messages, the only kind this
 * path decodes (`application/grpc`, `application/grpc+proto`, parameters allowed).
 */
export function isGrpcProtoContentType(contentType: string | undefined): boolean {
  if (contentType === "application/grpc" || contentType === "application/grpc+proto") return true;
  return contentType !== undefined && /^application\/grpc(\+proto)?\s*(;|$)/i.test(contentType);
}

/**
 * The longest timer Node can set (about 24.8 days); a longer timeout would
 * fire at once, so a deadline further away than this counts as none.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The call's timeout in milliseconds from its `grpc-timeout` header:
 * undefined when it has none (or one too far away to matter), a ConnectError
 * (INVALID_ARGUMENT) when the header is malformed.
 */
export function timeoutOf(headers: IncomingHttpHeaders): number | undefined | ConnectError {
  const value = headers["grpc-timeout"];
  if (value === undefined) return undefined;
  const parsed = parseTimeout(String(value), Number.MAX_SAFE_INTEGER);
  if (parsed.error !== undefined) return parsed.error;
  return parsed.timeoutMs !== undefined && parsed.timeoutMs <= MAX_TIMER_MS ? parsed.timeoutMs : undefined;
}

/** The first value of request header `name` as a handler may read it; null when absent or the protocol's own. */
export function requestHeaderValue(headers: IncomingHttpHeaders, name: string): string | null {
  const key = name.toLowerCase();
  if (key.startsWith(":") || protocolRequestHeaders.has(key)) return null;
  const value = headers[key];
  return value === undefined ? null : Array.isArray(value) ? (value[0] ?? null) : value;
}

/** The error answering a path no method is registered at. */
export function unknownMethodError(path: string | undefined): ConnectError {
  return new ConnectError(`this server has no method ${path ?? "(no :path)"}`, Code.Unimplemented);
}
