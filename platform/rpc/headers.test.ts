import assert from "node:assert/strict";
import { test } from "node:test";
import { addHttp2Fields, headersFromHttp2, protocolResponseHeaders } from "./headers.js";

function pairs(h: Headers): [string, string][] {
  const out: [string, string][] = [];
  h.forEach((value, key) => out.push([key, value]));
  return out;
}

test("HTTP/2 headers become Headers without pseudo-headers or omitted names; repeated values are kept", () => {
  const h = headersFromHttp2({ ":status": "200", "x-a": "1", "x-list": ["p", "q"], te: "trailers" }, new Set(["te"]));
  assert.deepEqual(pairs(h), [["x-a", "1"], ["x-list", "p, q"]]);
  assert.deepEqual(pairs(headersFromHttp2(undefined)), []);
});

test("Headers become HTTP/2 fields: each -bin value its own field, protocol and connection names left out", () => {
  const fields = addHttp2Fields(
    { ":status": 200 },
    new Headers({ "x-a": "1", "x-b-bin": "q6ur, AAE", "grpc-status": "0", connection: "close", "content-type": "text/plain" }),
    protocolResponseHeaders,
  );
  assert.deepEqual(fields, { ":status": 200, "x-a": "1", "x-b-bin": ["q6ur", "AAE"] });
});
