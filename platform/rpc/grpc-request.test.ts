import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { test } from "node:test";
import { isGrpcProtoContentType, requestHeaderValue, timeoutOf } from "./grpc-request.js";

test("gRPC with protobuf messages is served; other content types are not", () => {
  for (const ct of ["application/grpc", "application/grpc+proto", "application/grpc; charset=utf-8", "Application/GRPC+proto;x=1"]) assert.equal(isGrpcProtoContentType(ct), true, ct);
  for (const ct of [undefined, "", "application/grpc+json", "application/grpc-web", "application/grpc-web+proto", "application/proto", "text/plain"]) {
    assert.equal(isGrpcProtoContentType(ct), false, String(ct));
  }
});

test("grpc-timeout: every unit, none, malformed (INVALID_ARGUMENT), and too far away to time (none)", () => {
  const t = (value?: string) => timeoutOf(value === undefined ? {} : { "grpc-timeout": value });
  assert.equal(t(), undefined);
  assert.equal(t("2H"), 2 * 3_600_000);
  assert.equal(t("3M"), 180_000);
  assert.equal(t("4S"), 4000);
  assert.equal(t("250m"), 250);
  assert.equal(t("1500u"), 1.5);
  assert.equal(t("2000000n"), 2);
  assert.equal(t("0m"), 0);
  assert.equal(t("99999999H"), undefined);
  for (const bad of ["10", "m", "1.5S", "123456789m", "-1m", "5 S"]) {
    const r = t(bad);
    assert.ok(r instanceof ConnectError && r.code === Code.InvalidArgument, bad);
  }
});

test("a handler reads request headers by any case, first value, never the protocol's own or pseudo-headers", () => {
  const headers = { ":path": "/a.B/C", authorization: "Bearer x", "x-tags": ["a", "b"], "grpc-timeout": "5S", te: "trailers", "content-type": "application/grpc" };
  assert.equal(requestHeaderValue(headers, "Authorization"), "Bearer x");
  assert.equal(requestHeaderValue(headers, "x-tags"), "a");
  assert.equal(requestHeaderValue(headers, "x-missing"), null);
  for (const hidden of [":path", "grpc-timeout", "te", "content-type"]) assert.equal(requestHeaderValue(headers, hidden), null, hidden);
});
