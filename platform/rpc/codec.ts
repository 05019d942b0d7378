/**
 * Request decoding with the limits a public gRPC server needs.
 *
 * protobuf-es decodes recursively with no depth limit (10k nested levels
 * overflow the stack), so messages whose schema can nest are first walked on
 * the wire, iteratively, and refused past `MAX_DEPTH` levels. Every decode
 * failure becomes INVALID_ARGUMENT with a message that says what was wrong,
 * never INTERNAL: a malformed request is the caller's problem to fix.
 */
import { fromBinary, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

/** Nesting depth refused beyond; protobuf's own default recursion limit. */
export const MAX_DEPTH = 100;

/**
 * Each level of nesting costs at least two bytes on the wire (a tag and a
 * length), so a message shorter than this cannot go MAX_DEPTH levels deep and
 * needs no walk: most requests are small, and the walk was a measurable part
 * of a small RPC.
 */
const MIN_BYTES_TO_NEST_TOO_DEEP = 2 * (MAX_DEPTH - 1);

/** Why a request could not be decoded; handed to the handler instead of a message. */
export class DecodeFailure {
  constructor(readonly error: ConnectError) {}
}

/** Decodes bytes into a message of `schema`, or returns a `DecodeFailure`. */
export type Decoder = (bytes: Uint8Array) => unknown;

/** Creates the decoder for one request schema. */
export function createDecoder(schema: DescMessage): Decoder {
  const checkDepth = canNest(schema) ? createDepthCheck(schema) : undefined;
  return (bytes) => {
    try {
      if (bytes.length >= MIN_BYTES_TO_NEST_TOO_DEEP) checkDepth?.(bytes);
      return fromBinary(schema, bytes);
    } catch (err) {
      if (err instanceof ConnectError) return new DecodeFailure(err);
      const reason = err instanceof Error ? err.message : String(err);
      return new DecodeFailure(
        new ConnectError(`the request is not a valid ${schema.typeName}: ${reason}`, Code.InvalidArgument),
      );
    }
  };
}

/** Whether messages of `schema` can contain themselves, at any distance. */
function canNest(schema: DescMessage): boolean {
  const onPath = new Set<DescMessage>();
  const done = new Set<DescMessage>();
  const visit = (m: DescMessage): boolean => {
    if (onPath.has(m)) return true;
    if (done.has(m)) return false;
    onPath.add(m);
    for (const f of m.fields) {
      const child = messageOf(f);
      if (child !== undefined && visit(child)) return true;
    }
    onPath.delete(m);
    done.add(m);
    return false;
  };
  return visit(schema);
}

/**
 * Walks the wire format with an explicit stack, descending only into fields
 * the schema says are messages, and throws past MAX_DEPTH levels. Malformed
 * bytes are left for fromBinary to report.
 */
function createDepthCheck(root: DescMessage): (bytes: Uint8Array) => void {
  return (bytes) => {
    const stack: Frame[] = [{ child: childrenOf(root), end: bytes.length }];
    const reader = new BinaryReader(bytes);
    try {
      while (stack.length > 0) {
        const top = stack[stack.length - 1]!;
        if (reader.pos >= top.end) {
          stack.pop();
          continue;
        }
        const [fieldNo, wireType] = reader.tag();
        const child = top.child(fieldNo);
        if (wireType === WireType.LengthDelimited && child !== undefined) {
          const len = reader.uint32();
          if (stack.length >= MAX_DEPTH) {
            throw new ConnectError(
              `the request nests messages more than ${MAX_DEPTH} levels deep`,
              Code.InvalidArgument,
            );
          }
          stack.push({ child, end: reader.pos + len });
        } else {
          reader.skip(wireType, fieldNo);
        }
      }
    } catch (err) {
      if (err instanceof ConnectError) throw err;
      // Not our concern here: fromBinary reports malformed input precisely.
    }
  };
}

/** A message being walked: where it ends, and how to descend into its fields. */
interface Frame {
  child: Descend;
  end: number;
}

/** Given a field number, how to walk into that field's message, if it is one. */
type Descend = (fieldNo: number) => Descend | undefined;

/** The message type of a field (list item, map value or singular), if any. */
function messageOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) return field.message;
  if (field.fieldKind === "map" && field.mapKind === "message") return field.message;
  return undefined;
}

/**
 * How to descend from a message into its message-typed fields; a map field's
 * entries are messages whose field 2 holds the value.
 */
function childrenOf(schema: DescMessage): Descend {
  return (fieldNo) => {
    const field = schema.fields.find((f) => f.number === fieldNo);
    if (field === undefined) return undefined;
    const msg = messageOf(field);
    if (msg === undefined) return undefined;
    if (field.fieldKind === "map") return (entryField) => (entryField === 2 ? childrenOf(msg) : undefined);
    return childrenOf(msg);
  };
}
