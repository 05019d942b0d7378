import assert from "node:assert/strict";
import { test } from "node:test";
import { checkToolArguments } from "./tool-args.js";

const schema = { type: "object", properties: { path: { type: "string" } }, required: ["path"], additionalProperties: false };

test("valid arguments pass and come back parsed", () => {
  assert.deepEqual(checkToolArguments('{"path":"/tmp/a"}', schema), { ok: true, args: { path: "/tmp/a" } });
});

test("empty arguments mean an empty object", () => {
  assert.deepEqual(checkToolArguments("", {}), { ok: true, args: {} });
});

test("text that is not JSON is refused with a reason", () => {
  const r = checkToolArguments('{"path": ', schema);
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.error : "", /not valid JSON/);
});

test("JSON that is not an object is refused", () => {
  const r = checkToolArguments("[1,2]", {});
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.error : "", /must be a JSON object/);
});

test("arguments that break the schema are refused, naming what is wrong", () => {
  const r = checkToolArguments('{"path": 3}', schema);
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.error : "", /\/path must be string/);
  const missing = checkToolArguments("{}", schema);
  assert.match(!missing.ok ? missing.error : "", /must have required property 'path'/);
});

test("a tool with an invalid schema cannot be called", () => {
  const r = checkToolArguments("{}", { type: "no-such-type" });
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.error : "", /invalid JSON Schema/);
});
