/**
 * The hot path's encodings, done at the wire level so a gateway never turns a
 * call's arguments or a device's result into objects and back: the caller
 * encodes the ToolCall once, the holder frames those bytes for the device,
 * and the device's ToolResult bytes travel back as they came, decoded only by
 * the caller for its response.
 */
import { headers, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";

/** Encodes a switchyard.device.v1.ToolCall from its parts (arguments already encoded as a Struct). */
export function encodeToolCall(callId: string, tool: string, argsBytes: Uint8Array, deadlineMs: number): Uint8Array {
  const seconds = Math.floor(deadlineMs / 1000);
  const nanos = (deadlineMs - seconds * 1000) * 1_000_000;
  const tsLen = 1 + varintSize(seconds) + (nanos > 0 ? 1 + varintSize(nanos) : 0);
  const w = new Writer(strField(callId) + strField(tool) + bytesField(argsBytes) + 1 + varintSize(tsLen) + tsLen);
  w.str(1, callId).str(2, tool).bytes(3, argsBytes);
  w.tag(4, 2).varint(tsLen).tag(1, 0).varint(seconds);
  if (nanos > 0) w.tag(2, 0).varint(nanos);
  return w.buf;
}

/**
 * An encoded ToolCall with its `traceparent` (field 5) set: appended to the
 * bytes the caller encoded, which protobuf reads as the same message with
 * one more field (the holder, not the caller, knows the round trip's span).
 */
export function withTraceparent(toolCall: Uint8Array, traceparent: string): Uint8Array {
  const w = new Writer(toolCall.length + strField(traceparent));
  return w.raw(toolCall).str(5, traceparent).buf;
}

/** A DeviceFrame whose tool_call (field 3) is the given encoded ToolCall. */
export function toolCallFrame(toolCall: Uint8Array): Uint8Array {
  // Tag 0x1a (field 3, length-delimited), the length as a varint, the bytes.
  let n = toolCall.length;
  const head: number[] = [0x1a];
  while (n > 0x7f) {
    head.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  head.push(n);
  const out = Buffer.allocUnsafe(head.length + toolCall.length);
  out.set(head, 0);
  out.set(toolCall, head.length);
  return out;
}

/** What `peekToolResult` finds in a frame that is exactly one tool_result. */
export interface PeekedResult {
  readonly callId: string;
  /** Which outcome is set (undefined: none). */
  readonly kind: "result" | "error" | undefined;
  /** The ToolResult's own bytes. */
  readonly toolResult: Uint8Array;
}

/**
 * Reads a binary DeviceFrame far enough to see whether it is one tool_result
 * and of which call; undefined for any other frame (decode it fully then).
 * The ToolResult is walked at the wire level (no objects built): one that is
 * not well-formed gives undefined too, so the full decode judges it and no
 * undecodable result is relayed to a caller. Throws on malformed bytes.
 */
export function peekToolResult(frame: Uint8Array): PeekedResult | undefined {
  const r = new Reader(frame);
  let inner: Uint8Array | undefined;
  while (r.more()) {
    const tag = r.varint();
    if (tag !== ((4 << 3) | 2) || inner !== undefined) return undefined;
    inner = r.lengthDelimited();
  }
  if (inner === undefined || !wellFormed(inner, toolResultFields, 0)) return undefined;
  const ir = new Reader(inner);
  let callId = "";
  let kind: PeekedResult["kind"];
  while (ir.more()) {
    const tag = ir.varint();
    if (tag === ((1 << 3) | 2)) callId = ir.string();
    else {
      if (tag === ((2 << 3) | 2)) kind = "result";
      else if (tag === ((3 << 3) | 2)) kind = "error";
      ir.skip(tag & 7);
    }
  }
  return { callId, kind, toolResult: inner };
}

/**
 * Delivers an outcome on its core subject at once and records it in the
 * result stream without waiting (first writer wins: expected last subject
 * sequence 0; a later writer's record is refused by the server, silently).
 * `traceHeaders` (trace context, when tracing is on) go with the delivery.
 */
export function sendOutcome(nc: NatsConnection, deliverSubject: string, recordSubject: string, outcome: Uint8Array, traceHeaders?: MsgHdrs): void {
  try {
    nc.publish(deliverSubject, outcome, traceHeaders === undefined ? undefined : { headers: traceHeaders });
  } catch {
    return; /* disconnected: the caller's deadline or instance check ends the call */
  }
  // Recorded a moment later, in its own write: nats-server stores a JetStream
  // message before it flushes the deliveries read in the same buffer, so the
  // record would otherwise delay the result it follows.
  setImmediate(() => {
    try {
      const h = headers();
      h.set("Nats-Expected-Last-Subject-Sequence", "0");
      nc.publish(recordSubject, outcome, { headers: h });
    } catch {
      /* disconnected: a retry then finds no record and says the outcome is unknown */
    }
  });
}

/** The fields of a switchyard.device.v1.RelayedToolCall (see relay.proto). */
export interface RelayedCall {
  readonly userId: string;
  readonly requestedDeviceId: string;
  readonly deviceId: string;
  readonly sessionId: string;
  readonly replyInstance: string;
  readonly callId: string;
  readonly deadlineMs: number;
  readonly toolCall: Uint8Array;
}

/** Encodes a RelayedToolCall (the bytes protobuf-es writes, without reflection). */
export function encodeRelayedCall(r: RelayedCall): Uint8Array {
  const w = new Writer(
    strField(r.userId) + strField(r.requestedDeviceId) + strField(r.deviceId) + strField(r.sessionId) + strField(r.replyInstance) +
      strField(r.callId) + (r.deadlineMs !== 0 ? 1 + varintSize(r.deadlineMs) : 0) + bytesField(r.toolCall),
  );
  w.str(1, r.userId).str(2, r.requestedDeviceId).str(3, r.deviceId).str(4, r.sessionId).str(5, r.replyInstance).str(6, r.callId);
  if (r.deadlineMs !== 0) w.tag(7, 0).varint(r.deadlineMs);
  w.bytes(8, r.toolCall);
  return w.buf;
}

/** Decodes a RelayedToolCall; throws on malformed bytes. */
export function decodeRelayedCall(bytes: Uint8Array): RelayedCall {
  const r = new Reader(bytes);
  const o: { -readonly [K in keyof RelayedCall]: RelayedCall[K] } = { userId: "", requestedDeviceId: "", deviceId: "", sessionId: "", replyInstance: "", callId: "", deadlineMs: 0, toolCall: new Uint8Array(0) };
  while (r.more()) {
    const tag = r.varint();
    const no = tag >>> 3;
    if ((tag & 7) === 2 && no >= 1 && no <= 6) {
      const v = r.string();
      if (no === 1) o.userId = v;
      else if (no === 2) o.requestedDeviceId = v;
      else if (no === 3) o.deviceId = v;
      else if (no === 4) o.sessionId = v;
      else if (no === 5) o.replyInstance = v;
      else o.callId = v;
    } else if (tag === ((7 << 3) | 0)) o.deadlineMs = r.varint();
    else if (tag === ((8 << 3) | 2)) o.toolCall = r.lengthDelimited();
    else r.skip(tag & 7);
  }
  return o;
}

/**
 * Encodes a switchyard.device.v1.CallToolResponse from the device's encoded
 * ToolResult without decoding its outcome: each `result` (2) and `error` (3)
 * field is copied as CallToolResponse's `result` (3) or `error` (4), in order,
 * so any protobuf decoder ends with the outcome it would read from the
 * ToolResult itself (oneof: the last case wins; repeats of a case merge).
 * The ToolResult was checked well-formed by the holder (peekToolResult) or
 * encoded by it. Throws on malformed bytes.
 */
export function encodeCallToolResponse(callId: string, deviceId: string, toolResult: Uint8Array): Uint8Array {
  const outcome: [tag: number, bytes: Uint8Array][] = [];
  let outcomeLen = 0;
  const r = new Reader(toolResult);
  while (r.more()) {
    const tag = r.varint();
    if (tag === ((2 << 3) | 2) || tag === ((3 << 3) | 2)) {
      const bytes = r.lengthDelimited();
      outcome.push([tag === ((2 << 3) | 2) ? 3 : 4, bytes]);
      outcomeLen += 1 + varintSize(bytes.length) + bytes.length;
    } else r.skip(tag & 7);
  }
  const w = new Writer(strField(callId) + strField(deviceId) + outcomeLen);
  w.str(1, callId).str(2, deviceId);
  for (const [no, bytes] of outcome) w.tag(no, 2).varint(bytes.length).raw(bytes);
  return w.buf;
}

/** The fields of a switchyard.device.v1.RelayedOutcome (see relay.proto). */
export interface Outcome {
  readonly callId: string;
  readonly sessionId: string;
  readonly deviceId: string;
  /** The device's encoded ToolResult, or undefined for a failure. */
  readonly toolResult?: Uint8Array;
  readonly failure?: { readonly code: number; readonly message: string };
}

/** Encodes a RelayedOutcome. */
export function encodeOutcome(o: Outcome): Uint8Array {
  let failureLen = 0;
  if (o.toolResult === undefined && o.failure !== undefined) {
    failureLen = (o.failure.code !== 0 ? 1 + varintSize(o.failure.code) : 0) + strField(o.failure.message);
  }
  const w = new Writer(
    strField(o.callId) + strField(o.sessionId) + strField(o.deviceId) +
      (o.toolResult !== undefined ? 1 + varintSize(o.toolResult.length) + o.toolResult.length : o.failure !== undefined ? 1 + varintSize(failureLen) + failureLen : 0),
  );
  w.str(1, o.callId).str(2, o.sessionId).str(3, o.deviceId);
  if (o.toolResult !== undefined) w.tag(4, 2).varint(o.toolResult.length).raw(o.toolResult);
  else if (o.failure !== undefined) {
    w.tag(6, 2).varint(failureLen);
    if (o.failure.code !== 0) w.tag(1, 0).varint(o.failure.code);
    w.str(2, o.failure.message);
  }
  return w.buf;
}

/** Decodes a RelayedOutcome; throws on malformed bytes. */
export function decodeOutcome(bytes: Uint8Array): Outcome {
  const r = new Reader(bytes);
  let callId = "";
  let sessionId = "";
  let deviceId = "";
  let toolResult: Uint8Array | undefined;
  let failure: { code: number; message: string } | undefined;
  while (r.more()) {
    const tag = r.varint();
    if (tag === ((1 << 3) | 2)) callId = r.string();
    else if (tag === ((2 << 3) | 2)) sessionId = r.string();
    else if (tag === ((3 << 3) | 2)) deviceId = r.string();
    else if (tag === ((4 << 3) | 2)) {
      toolResult = r.lengthDelimited();
      failure = undefined;
    } else if (tag === ((6 << 3) | 2)) {
      const fr = new Reader(r.lengthDelimited());
      failure = { code: 0, message: "" };
      while (fr.more()) {
        const ft = fr.varint();
        if (ft === ((1 << 3) | 0)) failure.code = fr.varint() | 0;
        else if (ft === ((2 << 3) | 2)) failure.message = fr.string();
        else fr.skip(ft & 7);
      }
      toolResult = undefined;
    } else r.skip(tag & 7);
  }
  return { callId, sessionId, deviceId, toolResult, failure };
}

// The wire types of the fields of ToolResult, ToolError, google.protobuf.Struct,
// its map entry, Value and ListValue; a nested message names its own table.
type Fields = { [no: number]: number | Fields };
const valueFields: Fields = { 1: 0, 2: 1, 3: 2, 4: 0 };
const structFields: Fields = { 1: { 1: 2, 2: valueFields } };
valueFields[5] = structFields;
valueFields[6] = { 1: valueFields };
const toolResultFields: Fields = { 1: 2, 2: structFields, 3: { 1: 0, 2: 2, 3: structFields } };
/** Nesting beyond this is left to the full decode. */
const maxDepth = 64;

/** Whether `bytes` parse as the message whose fields are `fields` (unknown fields allowed), without building it. */
function wellFormed(bytes: Uint8Array, fields: Fields, depth: number): boolean {
  if (depth > maxDepth) return false;
  const r = new Reader(bytes);
  try {
    while (r.more()) {
      const tag = r.varint();
      if (tag >>> 3 === 0) return false; // protobuf-es refuses field number 0
      const want = fields[tag >>> 3];
      if (want === undefined) r.skip(tag & 7);
      else if (typeof want === "number") {
        if ((tag & 7) !== want) return false;
        r.skip(want);
      } else if ((tag & 7) !== 2 || !wellFormed(r.lengthDelimited(), want, depth + 1)) return false;
    }
    return true;
  } catch {
    return false;
  }
}

// A minimal protobuf writer and reader over Buffers, for the messages above:
// non-negative integers below 2^53, UTF-8 strings, bytes.

/** Bytes of `n` (a non-negative integer below 2^53) as a protobuf varint. */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Size of a string field (0 when empty: proto3 omits it). */
function strField(s: string): number {
  if (s === "") return 0;
  const n = Buffer.byteLength(s, "utf8");
  return 1 + varintSize(n) + n;
}

function bytesField(b: Uint8Array): number {
  return b.length === 0 ? 0 : 1 + varintSize(b.length) + b.length;
}

class Writer {
  readonly buf: Buffer;
  private pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  tag(no: number, wireType: number): this {
    return this.varint((no << 3) | wireType);
  }
  varint(n: number): this {
    while (n >= 128) {
      this.buf[this.pos++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
    return this;
  }
  raw(b: Uint8Array): this {
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
  str(no: number, s: string): this {
    if (s === "") return this;
    const n = Buffer.byteLength(s, "utf8");
    this.tag(no, 2).varint(n);
    this.buf.write(s, this.pos, n, "utf8");
    this.pos += n;
    return this;
  }
  bytes(no: number, b: Uint8Array): this {
    return b.length === 0 ? this : this.tag(no, 2).varint(b.length).raw(b);
  }
}

class Reader {
  private pos = 0;
  private readonly buf: Buffer;
  constructor(bytes: Uint8Array) {
    this.buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  more(): boolean {
    return this.pos < this.buf.length;
  }
  varint(): number {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new Error("truncated varint");
      const b = this.buf[this.pos++]!;
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 128;
    }
    throw new Error("varint too long");
  }
  lengthDelimited(): Uint8Array {
    const n = this.varint();
    const end = this.pos + n;
    if (end > this.buf.length) throw new Error("truncated field");
    const out = new Uint8Array(this.buf.buffer, this.buf.byteOffset + this.pos, n);
    this.pos = end;
    return out;
  }
  string(): string {
    const n = this.varint();
    const end = this.pos + n;
    if (end > this.buf.length) throw new Error("truncated string");
    const s = this.buf.toString("utf8", this.pos, end);
    this.pos = end;
    return s;
  }
  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 2) this.lengthDelimited();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wireType}`);
    if (this.pos > this.buf.length) throw new Error("truncated field");
  }
}
