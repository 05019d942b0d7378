/**
 * The hand-written hot-path codecs write and read the same bytes as the
 * generated protobuf-es code, so every instance (and any other client of
 * relay.proto) agrees on them.
 */
import { create, fromBinary, fromJson, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { StructSchema, timestampMs } from "@bufbuild/protobuf/wkt";
import assert from "node:assert/strict";
import { test } from "node:test";
import { DeviceFrameSchema, ToolCallSchema, ToolResultSchema } from "../gen/switchyard/device/v1/device_frame_pb.js";
import { CallToolResponseSchema } from "../gen/switchyard/device/v1/device_pb.js";
import { RelayedOutcomeSchema, RelayedToolCallSchema } from "../gen/switchyard/device/v1/relay_pb.js";
import { structBytes } from "./codec.js";
import { decodeOutcome, decodeRelayedCall, encodeCallToolResponse, encodeOutcome, encodeRelayedCall, encodeToolCall, peekToolResult, toolCallFrame } from "./wire.js";

const args = { path: "/tmp/é", list: [1, "two", { three: true }], nested: { n: null } };

test("a ToolCall encoded by hand decodes with protobuf-es, and frames as a DeviceFrame of any size", () => {
  for (const pad of [0, 200, 20_000]) {
    const a = { ...args, pad: "x".repeat(pad) };
    const bytes = encodeToolCall("call-1", "filesystem.read_file", structBytes(a), 1_800_000_000_123);
    const call = fromBinary(ToolCallSchema, bytes);
    assert.equal(call.callId, "call-1");
    assert.equal(call.tool, "filesystem.read_file");
    assert.deepEqual(call.arguments, a);
    assert.equal(timestampMs(call.deadline!), 1_800_000_000_123);
    const frame = fromBinary(DeviceFrameSchema, toolCallFrame(bytes));
    assert.equal(frame.frame.case, "toolCall");
    assert.deepEqual(frame.frame.value, call);
  }
});

test("structBytes writes the bytes protobuf-es writes for the same Struct", () => {
  const cases: JsonObject[] = [
    {},
    args,
    { "": "", zero: 0, neg: -1.5, big: 2 ** 60, f: false, t: true, n: null, s: "ü€😀" },
    { list: [], empty: {}, deep: { a: { b: { c: [[], [null, [1, { d: "x".repeat(300) }]]] } } } },
    { "2": "numeric keys first", "1": 1, b: "then the rest", a: "in insertion order" },
    { long: "y".repeat(70_000), many: Array.from({ length: 200 }, (_, i) => ({ i, s: `item ${i}` })) },
  ];
  for (const c of cases) {
    assert.deepEqual(Buffer.from(structBytes(c)), Buffer.from(toBinary(StructSchema, fromJson(StructSchema, c))));
  }
  assert.equal(structBytes(undefined).length, 0);
});

test("CallToolResponse spliced from a ToolResult decodes as the ToolResult's outcome does", () => {
  const result = (value: JsonObject) => toBinary(ToolResultSchema, create(ToolResultSchema, { callId: "c1", outcome: { case: "result", value } }));
  const error = (message: string) => toBinary(ToolResultSchema, create(ToolResultSchema, { callId: "c1", outcome: { case: "error", value: { message } } }));
  const unknownField = Uint8Array.from([0x48, 0x07]); // field 9, varint 7: not in ToolResult
  const toolResults = [
    result(args),
    result({}),
    error("denied"),
    toBinary(ToolResultSchema, create(ToolResultSchema, { callId: "c1" })),
    Buffer.concat([result({ a: 1 }), error("later wins")]),
    Buffer.concat([error("earlier"), result({ b: 2 })]),
    Buffer.concat([result({ a: 1 }), result({ b: 2 })]), // one case repeated: merged
    Buffer.concat([unknownField, result({ c: [3] })]),
  ];
  for (const bytes of toolResults) {
    const r = fromBinary(ToolResultSchema, bytes);
    const expected = create(CallToolResponseSchema, { callId: "call-9", deviceId: "dev-1", outcome: r.outcome });
    assert.deepEqual(fromBinary(CallToolResponseSchema, encodeCallToolResponse("call-9", "dev-1", bytes)), expected);
  }
});

test("RelayedToolCall: hand codec and protobuf-es agree both ways", () => {
  const fields = { userId: "u ✓", requestedDeviceId: "", deviceId: "d1", sessionId: "s1", replyInstance: "gw-a", callId: "c1", deadlineMs: 1_800_000_000_000, toolCall: Uint8Array.from([1, 2, 3]) };
  const viaEs = fromBinary(RelayedToolCallSchema, encodeRelayedCall(fields));
  assert.deepEqual({ ...viaEs, $typeName: undefined, deadlineMs: Number(viaEs.deadlineMs), toolCall: Uint8Array.from(viaEs.toolCall) }, { ...fields, $typeName: undefined });
  const back = decodeRelayedCall(toBinary(RelayedToolCallSchema, create(RelayedToolCallSchema, { ...fields, deadlineMs: BigInt(fields.deadlineMs) })));
  assert.deepEqual(back, fields);
});

test("RelayedOutcome: results and failures agree both ways", () => {
  const result = { callId: "c1", sessionId: "s1", deviceId: "d1", toolResult: Uint8Array.from([9, 8]) };
  assert.deepEqual(decodeOutcome(toBinary(RelayedOutcomeSchema, fromBinary(RelayedOutcomeSchema, encodeOutcome(result)))), { ...result, failure: undefined });
  const failure = { callId: "c2", sessionId: "", deviceId: "", failure: { code: 14, message: "gone" } };
  const es = fromBinary(RelayedOutcomeSchema, encodeOutcome(failure));
  assert.equal(es.outcome.case, "failure");
  assert.equal(es.outcome.value?.code, 14);
  assert.deepEqual(decodeOutcome(toBinary(RelayedOutcomeSchema, es)), { ...failure, toolResult: undefined });
});

test("peekToolResult finds the call id and outcome of a tool_result frame only", () => {
  const ok = create(DeviceFrameSchema, { frame: { case: "toolResult", value: { callId: "c9", outcome: { case: "result", value: args } } } });
  const peeked = peekToolResult(toBinary(DeviceFrameSchema, ok))!;
  assert.equal(peeked.callId, "c9");
  assert.equal(peeked.kind, "result");
  assert.deepEqual(fromBinary(ToolResultSchema, peeked.toolResult).outcome.value, args);
  const err = create(DeviceFrameSchema, { frame: { case: "toolResult", value: { callId: "c9", outcome: { case: "error", value: { message: "no" } } } } });
  assert.equal(peekToolResult(toBinary(DeviceFrameSchema, err))!.kind, "error");
  const none = create(DeviceFrameSchema, { frame: { case: "toolResult", value: { callId: "c9" } } });
  assert.equal(peekToolResult(toBinary(DeviceFrameSchema, none))!.kind, undefined);
  assert.equal(peekToolResult(toBinary(DeviceFrameSchema, create(DeviceFrameSchema, { frame: { case: "ping", value: {} } }))), undefined);
  assert.throws(() => peekToolResult(Uint8Array.from([0x22, 0x05, 0x0a])));
});
