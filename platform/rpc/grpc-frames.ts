/**
 * gRPC's length-prefixed messages on an HTTP/2 stream: one byte of flags
 * (bit 0: compressed), four bytes of big-endian length, then the message.
 * Both ends of the platform's gRPC (the client transport and the server
 * path) read and write messages through this module.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Frames one serialized message (never compressed: the platform sends messages as they are). */
export function encodeFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, 5);
  return frame;
}

/** One message as it came off the wire. */
export interface Frame {
  /** Whether the sender compressed it (with the stream's `grpc-encoding`). */
  readonly compressed: boolean;
  readonly message: Buffer;
}

/** Splits a stream's chunks into whole messages. */
export interface FrameReader {
  /** Adds a chunk; returns the messages it completed (often none or one). */
  push(chunk: Buffer): Frame[];
  /** Whether bytes of an unfinished frame are held (a stream that ends now was cut). */
  readonly partial: boolean;
}

/**
 * Creates a reader refusing messages over `maxBytes` (RESOURCE_EXHAUSTED);
 * `sender` names the other end in that error ("the server", "the client").
 */
export function createFrameReader(maxBytes: number, sender: string): FrameReader {
  let held: Buffer | undefined;
  return {
    push(chunk) {
      let buf = held === undefined ? chunk : Buffer.concat([held, chunk]);
      held = undefined;
      const out: Frame[] = [];
      while (buf.length >= 5) {
        const length = buf.readUInt32BE(1);
        if (length > maxBytes) throw new ConnectError(`${sender} sent a message of ${length} bytes, over the limit of ${maxBytes}`, Code.ResourceExhausted);
        if (buf.length < 5 + length) break;
        out.push({ compressed: (buf[0]! & 1) === 1, message: buf.subarray(5, 5 + length) });
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
