/**
 * Responses a handler hands over already encoded. A handler that relays bytes
 * it received (e.g. a result another process sent) would otherwise
 * decode them into objects only for the transport to encode them again; on
 * the gRPC path that round trip cost more than the rest of the response.
 *
 * The gRPC path writes the bytes as they are. The Connect path (connect-node
 * encodes responses itself, in binary or JSON) decodes them into the message
 * first, so every protocol still answers the same message.
 */
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

const wireForm = Symbol("wire form");

/**
 * A response of type `schema` given as its protobuf encoding. It is typed as
 * the message so a handler can return it, but it is only a carrier: nothing
 * but the transports may read its fields. `bytes` must be a valid encoding of
 * `schema` (the caller's responsibility, e.g. checked where they came from).
 */
export function encodedResponse<T extends DescMessage>(schema: T, bytes: Uint8Array): MessageShape<T> {
  return { $typeName: schema.typeName, [wireForm]: bytes } as unknown as MessageShape<T>;
}

/** The bytes of a response made by `encodedResponse`; undefined for any other value. */
export function wireFormOf(value: unknown): Uint8Array | undefined {
  return typeof value === "object" && value !== null ? (value as { [wireForm]?: Uint8Array })[wireForm] : undefined;
}

/** `value` as a message of `schema`: decoded when it is an encoded response, else as it is. */
export function decodedResponse(schema: DescMessage, value: unknown): unknown {
  const bytes = wireFormOf(value);
  return bytes === undefined ? value : fromBinary(schema, bytes);
}
