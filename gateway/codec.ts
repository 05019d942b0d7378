/**
 * The device protocol's two encodings, chosen by WebSocket subprotocol:
 * binary protobuf messages (the one clients should use) and protobuf JSON in
 * text messages (for debugging with any WebSocket tool).
 */
import { fromBinary, fromJson, fromJsonString, toBinary, toJsonString, type JsonObject } from "@bufbuild/protobuf";
import { StructSchema } from "@bufbuild/protobuf/wkt";
import { DeviceFrameSchema, type DeviceFrame } from "../gen/switchyard/device/v1/device_frame_pb.js";

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

/** The protobuf encoding of a Struct field's value (empty object when unset). */
export function structBytes(obj: JsonObject | undefined): Uint8Array {
  return obj === undefined ? new Uint8Array(0) : toBinary(StructSchema, fromJson(StructSchema, obj));
}
