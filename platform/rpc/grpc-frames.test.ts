import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { test } from "node:test";
import { createFrameReader, encodeFrame } from "./grpc-frames.js";

const bytes = (...b: number[]) => new Uint8Array(b);

test("a frame is a flag byte, a big-endian length and the message", () => {
  assert.deepEqual([...encodeFrame(bytes(7, 8, 9))], [0, 0, 0, 0, 3, 7, 8, 9]);
  assert.deepEqual([...encodeFrame(bytes())], [0, 0, 0, 0, 0]);
});

test("messages split across chunks and several in one chunk come out whole, in order", () => {
  const reader = createFrameReader(1024, "the server");
  const wire = Buffer.concat([encodeFrame(bytes(1, 2, 3)), encodeFrame(bytes()), encodeFrame(bytes(4))]);
  const got: number[][] = [];
  for (const cut of [2, 6, 7]) {
    // feed the wire in three pieces: [0, cut), [cut, cut+3), rest
    const r = createFrameReader(1024, "the server");
    const parts = [wire.subarray(0, cut), wire.subarray(cut, cut + 3), wire.subarray(cut + 3)];
    const out = parts.flatMap((p) => r.push(p)).map((f) => [...f.message]);
    assert.deepEqual(out, [[1, 2, 3], [], [4]], `cut at ${cut}`);
    assert.equal(r.partial, false);
  }
  got.push(...reader.push(wire.subarray(0, 4)).map((f) => [...f.message]));
  assert.deepEqual(got, []);
  assert.equal(reader.partial, true, "a stream ending now was cut mid-frame");
});

test("a message over the limit is RESOURCE_EXHAUSTED, naming the sender", () => {
  const big = createFrameReader(2, "the client");
  assert.throws(
    () => big.push(encodeFrame(bytes(1, 2, 3))),
    (e: unknown) => e instanceof ConnectError && e.code === Code.ResourceExhausted && /^the client sent a message of 3 bytes, over the limit of 2/.test(e.rawMessage),
  );
});

test("the compressed flag is read per message", () => {
  const wire = Buffer.concat([Buffer.from([1, 0, 0, 0, 1, 9]), encodeFrame(bytes(8))]);
  const frames = createFrameReader(10, "the client").push(wire);
  assert.deepEqual(
    frames.map((f) => [f.compressed, [...f.message]]),
    [
      [true, [9]],
      [false, [8]],
    ],
  );
});
