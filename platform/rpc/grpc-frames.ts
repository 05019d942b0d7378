/**
 * gRPC's length-prefixed messages on an HTTP/2 stream: one byte of flags
 * (bit 0: compressed), four bytes of big-endian length, then the message.
 * The client never asks for compression, so a compressed frame is refused.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Frames one serialized message. */
export function encodeFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, 5);
  return frame;
}

/** Splits a stream's chunks into whole messages. */
export interface FrameReader {
  /** Adds a chunk; returns the messages it completed (often none or one). */
  push(chunk: Buffer): Buffer[];
  /** Whether bytes of an unfinished frame are held (a stream that ends now was cut). */
  readonly partial: boolean;
}

/** Creates a reader refusing messages over `maxBytes` (RESOURCE_EXHAUSTED). */
export function createFrameReader(maxBytes: number): FrameReader {
  let held: Buffer | undefined;
  return {
    push(chunk) {
      let buf = held === undefined ? chunk : Buffer.concat([held, chunk]);
      held = undefined;
      const out: Buffer[] = [];
      while (buf.length >= 5) {
        if (buf[0]! & 1) throw new ConnectError("the server sent a compressed message the client did not ask for", Code.Internal);
        const length = buf.readUInt32BE(1);
        if (length > maxBytes) throw new ConnectError(`the server sent a message of ${length} bytes, over the limit of ${maxBytes}`, Code.ResourceExhausted);
        if (buf.length < 5 + length) break;
        out.push(buf.subarray(5, 5 + length));
        buf = buf.subarray(5 + length);
      }
      if (buf.length > 0) held = buf;
      return out;
    },
    get partial() {
      return held !== undefined;
    },
  };
}
