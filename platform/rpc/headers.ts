/**
 * Conversions between HTTP/2 header fields (node:http2's header objects) and
 * the fetch Headers that handlers and interceptors (written against
 * connect's API) read and write. Binary (-bin) values stay base64 text in
 * Headers, several values of one name joined by ", ", as connect keeps them.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";

const noNames: ReadonlySet<string> = new Set();

/** Copies HTTP/2 headers into a new Headers object, leaving out pseudo-headers and the names in `omit`. */
export function headersFromHttp2(fields: IncomingHttpHeaders | undefined, omit: ReadonlySet<string> = noNames): Headers {
  const out = new Headers();
  if (fields === undefined) return out;
  for (const key in fields) {
    if (key.startsWith(":") || omit.has(key)) continue;
    const value = fields[key];
    if (Array.isArray(value)) for (const v of value) out.append(key, v);
    else if (value !== undefined) out.append(key, value);
  }
  return out;
}

/**
 * Header names a handler may not send: those the gRPC protocol writes
 * itself, and the connection-specific ones HTTP/2 forbids (node:http2
 * throws on them).
 */
export const protocolResponseHeaders: ReadonlySet<string> = new Set([
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "content-type",
  "grpc-encoding",
  "grpc-accept-encoding",
  "te",
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

/**
 * Adds `headers` to HTTP/2 header fields `into`, leaving out the names in
 * `omit`; each value of a -bin name becomes a field of its own.
 */
export function addHttp2Fields(into: OutgoingHttpHeaders, headers: Headers, omit: ReadonlySet<string>): OutgoingHttpHeaders {
  headers.forEach((value, key) => {
    if (omit.has(key)) return;
    into[key] = key.endsWith("-bin") ? value.split(/,\s*/) : value;
  });
  return into;
}
