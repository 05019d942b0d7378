import assert from "node:assert/strict";
import { test } from "node:test";
import { PROVIDER_SAFE_TOOL_NAME, providerSafeToolNames } from "./tool-names.js";

test("safe names stay as they are", () => {
  const map = providerSafeToolNames(["clock_now", "notes-add", "A1"]);
  assert.deepEqual([...map], [["clock_now", "clock_now"], ["notes-add", "notes-add"], ["A1", "A1"]]);
});

test("dotted device tool names become safe, readable and distinct, even when they clean up alike", () => {
  const names = ["filesystem.read_file", "filesystem/read_file", "filesystem_read_file", "filesystem read file", "...", "ünïcode.tool"];
  const map = providerSafeToolNames(names);
  assert.equal(map.size, names.length);
  const safe = [...map.values()];
  assert.equal(new Set(safe).size, safe.length, "no two names collide");
  for (const s of safe) assert.match(s, PROVIDER_SAFE_TOOL_NAME);
  assert.equal(map.get("filesystem_read_file"), "filesystem_read_file", "an already-safe name keeps itself");
  assert.match(map.get("filesystem.read_file")!, /^filesystem_read_file_[0-9a-f]{8}$/);
});

test("long names are cut to 64 characters and stay distinct", () => {
  const long = "x".repeat(100);
  const map = providerSafeToolNames([`${long}.a`, `${long}.b`, "y".repeat(65)]);
  for (const s of map.values()) assert.match(s, PROVIDER_SAFE_TOOL_NAME);
  assert.equal(new Set(map.values()).size, 3);
});

test("the mapping is the same on every call and maps back without loss", () => {
  const names = ["a.b", "a/b", "c"];
  const first = providerSafeToolNames(names);
  assert.deepEqual([...providerSafeToolNames([...names].reverse())].sort(), [...first].sort());
  const back = new Map([...first].map(([original, safe]) => [safe, original]));
  for (const name of names) assert.equal(back.get(first.get(name)!), name);
});

test("a cleaned name that equals another tool's hashed name still gets a distinct one", () => {
  const hashed = providerSafeToolNames(["a.b"]).get("a.b")!;
  const map = providerSafeToolNames(["a.b", hashed]);
  assert.equal(map.get(hashed), hashed);
  assert.notEqual(map.get("a.b"), hashed);
  assert.match(map.get("a.b")!, PROVIDER_SAFE_TOOL_NAME);
});
