/**
 * How the gRPC server path ends a call on the wire: the status fields
 * (`grpc-status`, the percent-encoded `grpc-message`, and
 * `grpc-status-details-bin` when the error carries details) beside the
 * handler's own trailers, in node:http2's header-object form.
 */
import { type ConnectError } from "@connectrpc/connect";
import { mergeNonProtocolHeaders } from "@connectrpc/connect/protocol";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import type { OutgoingHttpHeaders } from "node:http2";
import { addHttp2Fields, protocolResponseHeaders } from "./headers.js";

/** The trailer fields of a call that succeeded, after the handler's trailers (if it set any). */
export function okTrailerFields(handlerTrailer: Headers | undefined): OutgoingHttpHeaders {
  const fields: OutgoingHttpHeaders = { "grpc-status": "0" };
  return handlerTrailer === undefined ? fields : addHttp2Fields(fields, handlerTrailer, protocolResponseHeaders);
}

/**
 * The trailer fields of a call that failed with `error`: the handler's
 * trailers, the error's metadata (also when it is an error relayed from
 * another service), and the status.
 */
export function errorTrailerFields(error: ConnectError, handlerTrailer: Headers | undefined): OutgoingHttpHeaders {
  const trailer = new Headers(handlerTrailer);
  // setTrailerStatus copies the metadata of errors raised here, not of those read off the wire.
  if (error.isWireError) mergeNonProtocolHeaders(trailer, error.metadata);
  setTrailerStatus(trailer, error);
  const fields: OutgoingHttpHeaders = { "grpc-status": trailer.get("grpc-status")!, "grpc-message": percentEncode(error.rawMessage) };
  const details = trailer.get("grpc-status-details-bin");
  if (details !== null) fields["grpc-status-details-bin"] = details;
  return addHttp2Fields(fields, trailer, protocolResponseHeaders);
}

/** Message text that needs no encoding: printable ASCII except "%". */
const plainMessage = /^[\x20-\x24\x26-\x7e]*$/;

/**
 * `grpc-message` as the gRPC spec encodes it: UTF-8, with every byte outside
 * printable ASCII, and "%", written %XX. (encodeURIComponent would also
 * encode ":" and "/", which grpc-js's decodeURI leaves encoded.)
 */
export function percentEncode(message: string): string {
  if (plainMessage.test(message)) return message;
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
