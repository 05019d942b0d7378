import assert from "node:assert/strict";
import { test } from "node:test";
import { Code } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { providerError, retryDelayMs } from "./errors.js";

const label = { provider: "openai", model: "m" } as const;

test("retry delay: retry-after-ms, retry-after seconds, an HTTP date, nothing", () => {
  assert.equal(retryDelayMs(new Headers({ "retry-after-ms": "1500", "retry-after": "9" })), 1500);
  assert.equal(retryDelayMs(new Headers({ "retry-after": "7" })), 7000);
  const now = Date.parse("2026-12-01T10:00:00Z");
  assert.equal(retryDelayMs(new Headers({ "retry-after": "Tue, 01 Dec 2026 10:00:30 GMT" }), now), 30_000);
  assert.equal(retryDelayMs(new Headers({ "retry-after": "soon" })), undefined);
  assert.equal(retryDelayMs(new Headers()), undefined);
});

test("401 and 403 are the operator's misconfiguration, never UNAUTHENTICATED", () => {
  for (const status of [401, 403]) {
    const err = providerError({ kind: "status", status, detail: "bad key" }, label);
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.message, /LLM_API_KEY/);
  }
});

test("429 carries RetryInfo from retry-after", () => {
  const err = providerError({ kind: "status", status: 429, headers: new Headers({ "retry-after": "3" }), detail: "" }, label);
  assert.equal(err.code, Code.ResourceExhausted);
  const [info] = err.findDetails(RetryInfoSchema);
  assert.equal(info?.retryDelay?.seconds, 3n);
  assert.match(err.message, /retry in 3\.0 s/);
});

test("5xx, connection failures, stalls, malformed and truncated streams are UNAVAILABLE", () => {
  const failures = [
    { kind: "status", status: 503, detail: "" },
    { kind: "connection", detail: "ECONNREFUSED" },
    { kind: "stall", stallMs: 100 },
    { kind: "malformed", detail: "not JSON" },
    { kind: "truncated" },
    { kind: "stream-error", detail: "overloaded" },
  ] as const;
  for (const failure of failures) assert.equal(providerError(failure, label).code, Code.Unavailable, failure.kind);
});
