import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { test } from "node:test";
import { deflateSync, gzipSync } from "node:zlib";
import { inflateMessage } from "./grpc-compression.js";

const hasCode = (code: Code, pattern: RegExp) => (e: unknown) => e instanceof ConnectError && e.code === code && pattern.test(e.rawMessage);

test("gzip and deflate messages inflate to what was sent", async () => {
  const message = Buffer.from("a request message, compressed by the client");
  assert.deepEqual(await inflateMessage(gzipSync(message), "gzip", 1024), message);
  assert.deepEqual(await inflateMessage(deflateSync(message), "deflate", 1024), message);
});

test("a message inflating past the limit is RESOURCE_EXHAUSTED (a zip bomb stays small on the wire)", async () => {
  const bomb = gzipSync(Buffer.alloc(1024 * 1024));
  assert.ok(bomb.length < 2048);
  await assert.rejects(inflateMessage(bomb, "gzip", 64 * 1024), hasCode(Code.ResourceExhausted, /more than the limit of 65536 bytes/));
});

test("an encoding the server does not know is UNIMPLEMENTED, naming what it accepts", async () => {
  await assert.rejects(inflateMessage(Buffer.from([1, 2]), "snappy", 1024), hasCode(Code.Unimplemented, /"snappy".*identity,deflate,gzip/));
});

test("a message flagged compressed under no encoding is a protocol error (INTERNAL)", async () => {
  await assert.rejects(inflateMessage(Buffer.from([1, 2]), undefined, 1024), hasCode(Code.Internal, /names no grpc-encoding/));
  await assert.rejects(inflateMessage(Buffer.from([1, 2]), "identity", 1024), hasCode(Code.Internal, /names no grpc-encoding/));
});

test("bytes that do not inflate are INVALID_ARGUMENT", async () => {
  await assert.rejects(inflateMessage(Buffer.from("not gzip at all"), "gzip", 1024), hasCode(Code.InvalidArgument, /does not inflate as gzip/));
});
