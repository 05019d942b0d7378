/** The bearer grammar, alone. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseBearer } from "./bearer.js";

test("Bearer tokens are read with any number of spaces and any case of the scheme", () => {
  for (const h of ["Bearer abc.DEF-_~+/=", "bearer abc.DEF-_~+/=", "Bearer  abc.DEF-_~+/=", " Bearer abc.DEF-_~+/= "]) {
    assert.equal(parseBearer(h), "abc.DEF-_~+/=", h);
  }
});

test("no header is undefined; anything not Bearer <b64token> is null", () => {
  assert.equal(parseBearer(undefined), undefined);
  assert.equal(parseBearer(null), undefined);
  assert.equal(parseBearer(""), undefined);
  for (const h of ["Basic YTpi", "Bearer", "Bearer ", "Bearer a b", "Bearera", "Bearer a=b", "Bearer a\tb"]) assert.equal(parseBearer(h), null, JSON.stringify(h));
});
