/**
 * Compressed request messages on the gRPC server path. Clients may compress
 * what they send (grpc-js and grpc-go do when told to); the server inflates
 * gzip and deflate, never past the request size limit, and always answers
 * uncompressed (internal calls are on fast networks, where compressing costs
 * more CPU than it saves time).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { promisify } from "node:util";
import zlib from "node:zlib";

/** The request encodings accepted, as the `grpc-accept-encoding` response header lists them. */
export const acceptedEncodings = "identity,deflate,gzip";

const inflaters: Readonly<Record<string, (buf: Buffer, options: zlib.ZlibOptions) => Promise<Buffer>>> = {
  gzip: promisify(zlib.gunzip),
  deflate: promisify(zlib.inflate),
};

/**
 * Inflates a message sent compressed with `encoding` (the request's
 * `grpc-encoding`, undefined when it sent none). Fails RESOURCE_EXHAUSTED when
 * the message inflates past `maxBytes` (a small request must not become a
 * huge one), UNIMPLEMENTED for an encoding this server does not know (as
 * gRPC requires), INTERNAL when the flag says compressed but no encoding was
 * named (a protocol error), and INVALID_ARGUMENT for bytes that do not inflate.
 */
export async function inflateMessage(message: Buffer, encoding: string | undefined, maxBytes: number): Promise<Buffer> {
  if (encoding === undefined || encoding === "identity") {
    throw new ConnectError("the request has a message marked compressed but names no grpc-encoding", Code.Internal);
  }
  const inflate = inflaters[encoding];
  if (inflate === undefined) {
    throw new ConnectError(`the request is compressed with "${encoding}", which this server does not accept (it accepts ${acceptedEncodings})`, Code.Unimplemented);
  }
  try {
    return await inflate(message, { maxOutputLength: maxBytes });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw new ConnectError(`the request message inflates to more than the limit of ${maxBytes} bytes`, Code.ResourceExhausted);
    }
    throw new ConnectError(`the request message does not inflate as ${encoding}: ${(err as Error).message}`, Code.InvalidArgument);
  }
}
