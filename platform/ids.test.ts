/** The id rule, alone. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { isId, NOT_ID_CHARACTERS } from "./ids.js";

test("ids are 1 to 64 letters, digits, _ or -", () => {
  for (const ok of ["a", "A-z_09", "x".repeat(64)]) assert.equal(isId(ok), true, ok);
  for (const bad of ["", "x".repeat(65), "a.b", "*", ">", "a b", "é", "a\n"]) assert.equal(isId(bad), false, JSON.stringify(bad));
});

test("NOT_ID_CHARACTERS turns any string into id characters", () => {
  assert.equal("web-1.example.com".replace(NOT_ID_CHARACTERS, "-"), "web-1-example-com");
});
