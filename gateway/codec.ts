/**
 * The device protocol's two encodings, chosen by WebSocket subprotocol:
 * binary protobuf messages (the one clients should use) and protobuf JSON in
 * text messages (for debugging with any WebSocket tool).
 */
import { fromBinary, fromJsonString, toBinary, toJsonString, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { DeviceFrameSchema, type DeviceFrame } from "../gen/switchyard/device/v1/device_frame_pb.js";
import { varintSize } from "./wire.js";

/** Subprotocol of binary protobuf frames. */
export const PROTO_PROTOCOL = "switchyard.device.v1+proto";
/** Subprotocol of JSON text frames. */
export const JSON_PROTOCOL = "switchyard.device.v1+json";

/** One of the two subprotocols. */
export type FrameProtocol = typeof PROTO_PROTOCOL | typeof JSON_PROTOCOL;

/** Picks our subprotocol from those a client offers (binary first), or undefined. */
export function chooseProtocol(offered: Iterable<string>): FrameProtocol | undefined {
  const set = new Set(offered);
  if (set.has(PROTO_PROTOCOL)) return PROTO_PROTOCOL;
  if (set.has(JSON_PROTOCOL)) return JSON_PROTOCOL;
  return undefined;
}

/** Encodes a frame for the wire. */
export function encodeFrame(protocol: FrameProtocol, frame: DeviceFrame): Uint8Array | string {
  return protocol === PROTO_PROTOCOL ? toBinary(DeviceFrameSchema, frame) : toJsonString(DeviceFrameSchema, frame);
}

/**
 * Decodes one WebSocket message; throws an Error saying why for a message of
 * the wrong kind (text under the binary protocol or the reverse) or one that
 * does not parse.
 */
export function decodeFrame(protocol: FrameProtocol, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): DeviceFrame {
  const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
  if (protocol === PROTO_PROTOCOL) {
    if (!isBinary) throw new Error("text messages are refused: frames are binary protobuf under this subprotocol");
    return fromBinary(DeviceFrameSchema, bytes);
  }
  if (isBinary) throw new Error("binary messages are refused: frames are JSON text under this subprotocol");
  return fromJsonString(DeviceFrameSchema, bytes.toString("utf8"));
}

/**
 * The protobuf encoding of a Struct field's value (empty object when unset):
 * the bytes protobuf-es's `toBinary(StructSchema, fromJson(StructSchema, obj))`
 * gives, written straight from the JSON value (CallTool encodes its arguments
 * on every call; building the Struct message first cost several times more).
 * Two passes: the first records every nested message's and string's size in
 * visiting order, the second writes, reading the sizes back in that order.
 */
export function structBytes(obj: JsonObject | undefined): Uint8Array {
  if (obj === undefined) return new Uint8Array(0);
  const sizes: number[] = [];
  const out = Buffer.allocUnsafe(structSize(obj, sizes));
  writeStruct(out, 0, obj, sizes, { next: 0 });
  return out;
}

// Struct { map<string, Value> fields = 1 }; Value { null_value = 1 (enum),
// number_value = 2 (double), string_value = 3, bool_value = 4,
// struct_value = 5, list_value = 6 }; ListValue { repeated Value values = 1 }.
// Every tag here fits in one byte.

/** Size of a length-delimited field of `len` bytes (one-byte tag). */
function delimited(len: number): number {
  return 1 + varintSize(len) + len;
}

function structSize(obj: JsonObject, sizes: number[]): number {
  let size = 0;
  for (const key in obj) {
    const at = sizes.length;
    sizes.push(0, 0, 0); // entry, key bytes, value message
    const keyLen = Buffer.byteLength(key, "utf8");
    const valueLen = valueSize(obj[key]!, sizes);
    const entryLen = delimited(keyLen) + delimited(valueLen);
    sizes[at] = entryLen;
    sizes[at + 1] = keyLen;
    sizes[at + 2] = valueLen;
    size += delimited(entryLen);
  }
  return size;
}

function valueSize(v: JsonValue, sizes: number[]): number {
  if (v === null) return 2;
  switch (typeof v) {
    case "number":
      return 9;
    case "boolean":
      return 2;
    case "string": {
      const len = Buffer.byteLength(v, "utf8");
      sizes.push(len);
      return delimited(len);
    }
  }
  const at = sizes.length;
  sizes.push(0);
  let len = 0;
  if (Array.isArray(v)) {
    for (const item of v) len += delimited(valueSize(item, sizes));
  } else {
    len = structSize(v as JsonObject, sizes);
  }
  sizes[at] = len;
  return delimited(len);
}

function writeVarint(out: Buffer, pos: number, n: number): number {
  while (n >= 128) {
    out[pos++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[pos++] = n;
  return pos;
}

function writeStruct(out: Buffer, pos: number, obj: JsonObject, sizes: number[], cursor: { next: number }): number {
  for (const key in obj) {
    const entryLen = sizes[cursor.next++]!;
    const keyLen = sizes[cursor.next++]!;
    const valueLen = sizes[cursor.next++]!;
    out[pos++] = 0x0a; // fields, 1
    pos = writeVarint(out, pos, entryLen);
    out[pos++] = 0x0a; // key, 1
    pos = writeVarint(out, pos, keyLen);
    pos += out.write(key, pos, keyLen, "utf8");
    out[pos++] = 0x12; // value, 2
    pos = writeVarint(out, pos, valueLen);
    pos = writeValue(out, pos, obj[key]!, sizes, cursor);
  }
  return pos;
}

function writeValue(out: Buffer, pos: number, v: JsonValue, sizes: number[], cursor: { next: number }): number {
  if (v === null) {
    out[pos++] = 0x08; // null_value, 1: NULL_VALUE (0)
    out[pos++] = 0;
    return pos;
  }
  switch (typeof v) {
    case "number":
      out[pos++] = 0x11; // number_value, 2 (fixed64)
      out.writeDoubleLE(v, pos);
      return pos + 8;
    case "boolean":
      out[pos++] = 0x20; // bool_value, 4
      out[pos++] = v ? 1 : 0;
      return pos;
    case "string": {
      const len = sizes[cursor.next++]!;
      out[pos++] = 0x1a; // string_value, 3
      pos = writeVarint(out, pos, len);
      return pos + out.write(v, pos, len, "utf8");
    }
  }
  const len = sizes[cursor.next++]!;
  if (Array.isArray(v)) {
    out[pos++] = 0x32; // list_value, 6
    pos = writeVarint(out, pos, len);
    for (const item of v) {
      out[pos++] = 0x0a; // values, 1
      pos = writeVarint(out, pos, valueLenOf(item, sizes, cursor.next));
      pos = writeValue(out, pos, item, sizes, cursor);
    }
    return pos;
  }
  out[pos++] = 0x2a; // struct_value, 5
  pos = writeVarint(out, pos, len);
  return writeStruct(out, pos, v as JsonObject, sizes, cursor);
}

/** The encoded size of a list item about to be written (its own size, or the one recorded at `next`). */
function valueLenOf(v: JsonValue, sizes: number[], next: number): number {
  if (v === null || typeof v === "boolean") return 2;
  if (typeof v === "number") return 9;
  return delimited(sizes[next]!);
}
