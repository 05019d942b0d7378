import assert from "node:assert/strict";
import { test } from "node:test";
import { createFeatureHashingEmbedder, featureHash, FEATURE_HASHING_DIMS } from "./embedder.js";
import { cosine } from "./vector-math.js";

test("feature hashing: deterministic, unit length, near for shared words, named in its answers", async () => {
  const a = featureHash("Invoice from ACME for March");
  assert.equal(a.length, FEATURE_HASHING_DIMS);
  assert.deepEqual(a, featureHash("invoice from acme for march"), "case does not matter");
  assert.ok(Math.abs(Math.hypot(...a) - 1) < 1e-6);
  const near = cosine(a, Float32Array.from(featureHash("ACME invoice, March")));
  const far = cosine(a, Float32Array.from(featureHash("holiday photos by the lake")));
  assert.ok(near > far + 0.3, `${near} vs ${far}`);
  assert.deepEqual(featureHash("!!!"), new Array(FEATURE_HASHING_DIMS).fill(0));
  const out = await createFeatureHashingEmbedder().embed(["x"]);
  assert.equal(out.provider, "feature-hashing");
});
