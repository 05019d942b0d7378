import assert from "node:assert/strict";
import { test } from "node:test";
import { decodePageToken, encodePageToken, queryFingerprint } from "./page-token.js";

test("a page token round-trips for its own query only", () => {
  const q = queryFingerprint(["user-a", "productivity", "", false]);
  assert.equal(decodePageToken(encodePageToken(50, q), q), 50);
  assert.equal(decodePageToken("", q), 0);
  const other = queryFingerprint(["user-b", "productivity", "", false]);
  assert.throws(() => decodePageToken(encodePageToken(50, q), other), /other filters/);
  assert.throws(() => decodePageToken("!!!", q), /not a token/);
  assert.throws(() => decodePageToken(Buffer.from('{"o":-1,"q":"x"}').toString("base64url"), q), /not a token/);
});
