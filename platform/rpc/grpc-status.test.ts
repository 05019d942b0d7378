import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import assert from "node:assert/strict";
import { test } from "node:test";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { errorTrailerFields, okTrailerFields, percentEncode } from "./grpc-status.js";

test("grpc-message: printable ASCII stays as it is; '%', controls and non-ASCII are %XX of their UTF-8 bytes", () => {
  assert.equal(percentEncode("text: must not be empty (a/b?)"), "text: must not be empty (a/b?)");
  assert.equal(percentEncode("100%"), "100%25");
  assert.equal(percentEncode("\t\n☺"), "%09%0A%E2%98%BA");
  const special = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
  assert.equal(decodeURIComponent(percentEncode(special)), special);
});

test("an OK call's trailers: grpc-status 0 and the handler's trailers, protocol names left out", () => {
  assert.deepEqual(okTrailerFields(undefined), { "grpc-status": "0" });
  const handler = new Headers({ "x-count": "3", "grpc-status": "13", "x-raw-bin": "q6ur, AAE" });
  assert.deepEqual(okTrailerFields(handler), { "grpc-status": "0", "x-count": "3", "x-raw-bin": ["q6ur", "AAE"] });
});

test("an error's trailers: code, encoded message, the handler's trailers and the error's metadata once", () => {
  const err = new ConnectError("no: 100%", Code.FailedPrecondition, { "x-why": "quota" });
  const fields = errorTrailerFields(err, new Headers({ "x-count": "3" }));
  assert.deepEqual(fields, { "grpc-status": "9", "grpc-message": "no: 100%25", "x-count": "3", "x-why": "quota" });
});

test("an error with details sends them in grpc-status-details-bin, where a client finds them", () => {
  const err = new ConnectError("slow down", Code.ResourceExhausted, undefined, [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: 2n, nanos: 0 } } }]);
  const fields = errorTrailerFields(err, undefined);
  assert.equal(typeof fields["grpc-status-details-bin"], "string");
  const received = findTrailerError(new Headers(fields as Record<string, string>))!;
  assert.equal(received.code, Code.ResourceExhausted);
  assert.equal(received.rawMessage, "slow down");
  assert.equal(received.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds, 2n);
});

test("an error relayed from another service keeps its metadata, not that service's protocol fields", () => {
  const err = new ConnectError("gone", Code.NotFound, new Headers({ "grpc-status": "5", "content-type": "application/grpc", "x-shard": "7" }));
  err.isWireError = true;
  assert.deepEqual(errorTrailerFields(err, undefined), { "grpc-status": "5", "grpc-message": "gone", "x-shard": "7" });
});
