/**
 * gRPC-Web by hand, as a browser without our client library would speak it:
 * length-prefixed frames in, a data frame and a trailer frame out. Used to
 * prove the wire format, not to be convenient.
 */

/** One gRPC-Web request body: flag 0, 4-byte big-endian length, the message. */
export function frame(message: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

/** A decoded gRPC-Web response body. */
export interface GrpcWebReply {
  /** The data frames' messages. */
  readonly messages: Uint8Array[];
  /** The trailer frame's fields, lower-cased names. */
  readonly trailers: Record<string, string>;
}

/** Splits a response body into its messages and its trailer frame (flag 0x80). */
export function unframe(body: Uint8Array): GrpcWebReply {
  const messages: Uint8Array[] = [];
  const trailers: Record<string, string> = {};
  let at = 0;
  while (at + 5 <= body.length) {
    const flag = body[at]!;
    const len = new DataView(body.buffer, body.byteOffset + at + 1, 4).getUint32(0);
    const payload = body.subarray(at + 5, at + 5 + len);
    at += 5 + len;
    if (flag & 0x80) {
      for (const line of new TextDecoder().decode(payload).split("\r\n")) {
        const i = line.indexOf(":");
        if (i > 0) trailers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
    } else messages.push(payload);
  }
  if (at !== body.length) throw new Error(`truncated gRPC-Web body: ${body.length - at} stray bytes`);
  return { messages, trailers };
}

/** Protobuf wire encoding of string fields only (enough for the requests we hand-build). */
export function encodeStrings(fields: Record<number, string>): Uint8Array {
  const parts: number[] = [];
  for (const [num, value] of Object.entries(fields)) {
    const bytes = new TextEncoder().encode(value);
    varint(parts, (Number(num) << 3) | 2);
    varint(parts, bytes.length);
    parts.push(...bytes);
  }
  return Uint8Array.from(parts);
}

function varint(out: number[], n: number) {
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
}

/**
 * Reads the length-delimited and varint fields of a protobuf message
 * (field number -> raw values), enough to pick strings and enums out of a
 * reply without generated code.
 */
export function decodeFields(msg: Uint8Array): Map<number, (Uint8Array | number)[]> {
  const out = new Map<number, (Uint8Array | number)[]>();
  let at = 0;
  const readVarint = () => {
    let n = 0;
    let shift = 0;
    for (;;) {
      const b = msg[at++]!;
      n += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return n;
      shift += 7;
    }
  };
  while (at < msg.length) {
    const key = readVarint();
    const num = Math.floor(key / 8);
    const type = key & 7;
    let value: Uint8Array | number;
    if (type === 0) value = readVarint();
    else if (type === 2) {
      const len = readVarint();
      value = msg.subarray(at, at + len);
      at += len;
    } else if (type === 1) (value = 0), (at += 8);
    else if (type === 5) (value = 0), (at += 4);
    else throw new Error(`unsupported wire type ${type}`);
    out.set(num, [...(out.get(num) ?? []), value]);
  }
  return out;
}
