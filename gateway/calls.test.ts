/** The caller's decisions that need no server: subjects to call ids, publish acks, deadline outcomes, device choice, joins, pending-call bookkeeping. */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { test } from "node:test";
import { PresenceEntrySchema, PresenceRecordSchema } from "../gen/switchyard/device/v1/relay_pb.js";
import {
  callIdOfAck,
  callIdOfResult,
  chooseDevice,
  createPendingCalls,
  deadlineFailure,
  joinRefusal,
  parsePublishAck,
  relayedCallOf,
  sameRelayed,
  sameRequest,
  type CallRequest,
} from "./calls.js";
import { decodeRelayedCall } from "./wire.js";

test("call ids are read from result and ack subjects", () => {
  assert.equal(callIdOfResult("sy.results.call-1.gw-a"), "call-1");
  assert.equal(callIdOfAck("sy.acks.gw-a.call-1"), "call-1");
});

test("publish acks: stored, duplicate, refused, absent or malformed", () => {
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  assert.deepEqual(parsePublishAck(enc({ stream: "T", seq: 7 })), { stream: "T", seq: 7 });
  assert.equal(parsePublishAck(enc({ seq: 7, duplicate: true })).duplicate, true);
  assert.equal(parsePublishAck(enc({ error: { code: 503, description: "no space" } })).error?.description, "no space");
  assert.equal(parsePublishAck(new Uint8Array()).error?.description, "JetStream is not available");
  assert.equal(parsePublishAck(new TextEncoder().encode("{")).error?.description, "malformed acknowledgement");
});

test("a passed deadline answers by where the call got to", () => {
  const at = (published: boolean, joined: boolean, waitForDevice: boolean) => deadlineFailure({ published, joined, req: { waitForDevice } });
  assert.equal(at(true, false, false).code, Code.DeadlineExceeded);
  assert.match(at(true, false, true).rawMessage, /it may have run/);
  assert.match(at(false, true, false).rawMessage, /waiting for the first call/);
  assert.equal(at(false, false, true).code, Code.Unavailable);
  assert.equal(at(false, false, false).rawMessage, "the call's deadline passed");
});

const entry = (deviceId: string, instance: string, tools: string[], connectedAtMs: number) =>
  create(PresenceEntrySchema, {
    sessionId: `s-${deviceId}`,
    device: { deviceId, gatewayInstance: instance, tools: tools.map((name) => ({ name })), connectTime: timestampFromMs(connectedAtMs) },
  });
const request = (over: Partial<CallRequest> = {}): CallRequest => ({
  callId: "call-1",
  userId: "u1",
  requestedDeviceId: "",
  tool: "ls",
  argsBytes: new Uint8Array([1, 2]),
  deadline: 1_000_000,
  waitForDevice: false,
  ...over,
});
const alive = (...instances: string[]) => ({ isAlive: (i: string) => instances.includes(i) });

test("the device chosen is the latest connected live one offering the tool, or the one named", () => {
  const record = create(PresenceRecordSchema, { entries: [entry("a", "gw-1", ["ls"], 10), entry("b", "gw-1", ["ls"], 20), entry("c", "gw-dead", ["ls"], 30)] });
  assert.equal(chooseDevice(record, request(), alive("gw-1")).entry?.device?.deviceId, "b");
  assert.equal(chooseDevice(record, request({ requestedDeviceId: "a" }), alive("gw-1")).entry?.device?.deviceId, "a");
});

test("no device chosen says why: none connected, the named one absent, or none offering the tool", () => {
  const record = create(PresenceRecordSchema, { entries: [entry("a", "gw-1", ["cat"], 10), entry("c", "gw-dead", ["ls"], 30)] });
  const none = chooseDevice(create(PresenceRecordSchema, {}), request(), alive("gw-1"));
  assert.equal(none.entry, undefined);
  assert.equal(none.error.code, Code.Unavailable);
  assert.equal(none.error.rawMessage, "no device of the user is connected");
  assert.equal(chooseDevice(record, request({ requestedDeviceId: "c" }), alive("gw-1")).error.rawMessage, "device c is not connected");
  const noTool = chooseDevice(record, request(), alive("gw-1")).error;
  assert.equal(noTool.code, Code.FailedPrecondition);
  assert.match(noTool.rawMessage, /offers the tool "ls"/);
});

test("a retry is the same call only with the same user, device, tool and arguments", () => {
  assert.equal(sameRequest(request(), request({ deadline: 5 })), true);
  assert.equal(sameRequest(request(), request({ userId: "u2" })), false);
  assert.equal(sameRequest(request(), request({ requestedDeviceId: "a" })), false);
  assert.equal(sameRequest(request(), request({ tool: "cat" })), false);
  assert.equal(sameRequest(request(), request({ argsBytes: new Uint8Array([1, 3]) })), false);
});

test("joining the first call: allowed for the same call, refused when gone, foreign or different", () => {
  const first = { data: relayedCallOf(request(), entry("a", "gw-1", ["ls"], 10), "gw-2") };
  assert.equal(joinRefusal(first, request({ deadline: 42 })), undefined); // the retry's own deadline does not matter
  assert.equal(sameRelayed(decodeRelayedCall(first.data), request()), true);
  assert.match(joinRefusal(null, request())!.rawMessage, /record is gone; use a new call_id/);
  assert.equal(joinRefusal({ data: new Uint8Array([0xff, 0xff]) }, request())?.rawMessage, "call_id was used by another kind of call");
  const different = joinRefusal(first, request({ argsBytes: new Uint8Array([9]) }));
  assert.equal(different?.code, Code.AlreadyExists);
  assert.match(different!.rawMessage, /different user, device, tool or arguments/);
});

test("the relayed call names the chosen connection, the reply instance and the caller's deadline", () => {
  const rc = decodeRelayedCall(relayedCallOf(request({ requestedDeviceId: "a" }), entry("a", "gw-1", ["ls"], 10), "gw-2"));
  assert.deepEqual({ ...rc, toolCall: undefined }, {
    userId: "u1", requestedDeviceId: "a", deviceId: "a", sessionId: "s-a", replyInstance: "gw-2", callId: "call-1", deadlineMs: 1_000_000, toolCall: undefined,
  });
});

test("pending calls settle once, run their cleanups, cancel their deadline and count per user", async () => {
  const cancelled: unknown[] = [];
  const calls = createPendingCalls({ cancel: (h) => void cancelled.push(h) });
  const a = calls.open(request());
  const b = calls.open(request({ callId: "call-2" }));
  calls.open(request({ callId: "call-3", userId: "u2" }));
  assert.equal(calls.countOf("u1"), 2);
  assert.equal(calls.size, 3);
  let cleaned = 0;
  a.cleanup.push(() => cleaned++);
  a.deadline = { slot: 1, fn: () => {} };
  calls.settle(a, { callId: "call-1", sessionId: "s", deviceId: "d", toolResult: new Uint8Array([7]) });
  calls.settle(a, new ConnectError("late", Code.Unavailable));
  assert.deepEqual((await a.promise).toolResult, new Uint8Array([7]));
  assert.equal(cleaned, 1);
  assert.deepEqual(cancelled, [{ slot: 1, fn: a.deadline.fn }]);
  assert.equal(calls.get("call-1"), undefined);
  assert.equal(calls.countOf("u1"), 1);
  calls.settle(b, { callId: "call-2", sessionId: "", deviceId: "", failure: { code: Code.Unavailable, message: "gone" } });
  await assert.rejects(b.promise, (e: ConnectError) => e.code === Code.Unavailable && e.rawMessage === "gone");
  assert.equal(calls.countOf("u1"), 0);
});

test("a call unlisted after joining an earlier one still counts until it settles", async () => {
  const calls = createPendingCalls({ cancel: () => {} });
  const p = calls.open(request());
  calls.unlist(p);
  assert.equal(calls.get("call-1"), undefined);
  assert.equal(calls.countOf("u1"), 1);
  const again = calls.open(request());
  calls.settle(p, new ConnectError("x", Code.Aborted));
  await assert.rejects(p.promise);
  assert.equal(calls.get("call-1"), again); // settling the unlisted one leaves the newer call listed
  assert.equal(calls.countOf("u1"), 1);
});
