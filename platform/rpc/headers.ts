/**
 * Conversions between grpc-js Metadata and the fetch Headers that handlers
 * (written against connect's HandlerContext) read and write. Binary (-bin)
 * values travel base64-encoded in Headers, as connect does it.
 */
import { Metadata } from "@grpc/grpc-js";
import { decodeBinaryHeader, encodeBinaryHeader } from "@connectrpc/connect";

/** Copies grpc-js metadata into a new Headers object. */
export function headersFromMetadata(metadata: Metadata): Headers {
  const headers = new Headers();
  const map = metadata.toJSON();
  for (const key in map) {
    for (const value of map[key]!) {
      headers.append(key, typeof value === "string" ? value : encodeBinaryHeader(value));
    }
  }
  return headers;
}

/** Headers that grpc-js writes itself and a handler must not duplicate. */
const reserved = new Set(["grpc-status", "grpc-message", "content-type", "grpc-encoding", "grpc-accept-encoding", "te"]);

/** Copies Headers into grpc-js metadata (into `into` when given). */
export function metadataFromHeaders(headers: Headers, into = new Metadata()): Metadata {
  headers.forEach((value, key) => {
    if (reserved.has(key)) return;
    if (key.endsWith("-bin")) {
      for (const part of value.split(/,\s*/)) into.add(key, Buffer.from(decodeBinaryHeader(part)));
    } else {
      into.add(key, value);
    }
  });
  return into;
}
