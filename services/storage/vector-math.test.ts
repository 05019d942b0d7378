import assert from "node:assert/strict";
import { test } from "node:test";
import { cosine, createTopK, decodeEmbedding, encodeEmbedding, firstNonFinite, vectorLiteral } from "./vector-math.js";

test("embeddings round-trip through float32 bytes and pgvector's text form", () => {
  const v = [0.1, -2.5, 3e-8, 1234.5];
  const back = decodeEmbedding(encodeEmbedding(v));
  assert.deepEqual(Array.from(back), v.map(Math.fround));
  assert.deepEqual(vectorLiteral(back).slice(1, -1).split(",").map(Number).map(Math.fround), Array.from(back));
});

test("cosine similarity: same direction 1, opposite -1, orthogonal 0, zero vector ranked nowhere", () => {
  const f = (a: number[]) => Float32Array.from(a);
  assert.equal(cosine([1, 2], f([2, 4])), 1);
  assert.equal(cosine([1, 0], f([-3, 0])), -1);
  assert.equal(cosine([1, 0], f([0, 5])), 0);
  assert.ok(Number.isNaN(cosine([0, 0], f([1, 1]))));
});

test("top-k keeps the best, highest score first, ties by id", () => {
  const top = createTopK<null>(3);
  for (const [id, score] of [["a", 0.1], ["b", 0.9], ["c", 0.5], ["d", 0.9], ["e", 0.2], ["f", Number.NaN]] as const) top.offer({ id, score, item: null });
  assert.deepEqual(top.result().map((s) => s.id), ["b", "d", "c"]);
});

test("non-finite numbers are found", () => {
  assert.equal(firstNonFinite([1, 2, Number.NaN]), 2);
  assert.equal(firstNonFinite([Number.POSITIVE_INFINITY]), 0);
  assert.equal(firstNonFinite([1, 2]), -1);
});
