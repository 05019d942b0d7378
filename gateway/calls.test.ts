/** The caller's decisions that need no server: subjects to call ids, publish acks, deadline outcomes. */
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { test } from "node:test";
import { callIdOfAck, callIdOfResult, deadlineFailure, parsePublishAck } from "./calls.js";

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
