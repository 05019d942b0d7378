/**
 * The declaration rules, without a server: replicas never lowered, settings
 * the mesh depends on restored, limits an operator changed kept.
 */
import type { StreamConfig } from "@nats-io/jetstream";
import assert from "node:assert/strict";
import { test } from "node:test";
import { creationConfig, isRetryableDeclareError, kvBucketStream, reconcile, type StreamDeclaration } from "./declare.js";

const declared: StreamDeclaration = {
  name: "S",
  subjects: ["s.>"],
  storage: "file" as StreamConfig["storage"],
  max_age: 600e9,
  allow_direct: true,
  republish: { src: "s.>", dest: "d.>" },
};
const created = (over: Partial<StreamConfig> = {}): StreamConfig =>
  ({ ...creationConfig(declared, 1), num_replicas: 1, republish: { src: "s.>", dest: "d.>", headers_only: false }, ...over }) as StreamConfig;

test("a stream as the mesh created it needs no update", () => {
  const r = reconcile(declared, created(), 1);
  assert.equal(r.update, undefined);
  assert.deepEqual(r.differences, []);
});

test("replicas are raised to NATS_REPLICAS and never lowered", () => {
  const up = reconcile(declared, created(), 3);
  assert.equal(up.update?.num_replicas, 3);
  assert.deepEqual(up.differences.map((d) => [d.setting, d.wins]), [["num_replicas", "declared"]]);
  const kept = reconcile(declared, created({ num_replicas: 3 }), 1);
  assert.equal(kept.update, undefined, "an R3 stream under NATS_REPLICAS=1 is left alone");
  assert.deepEqual(kept.differences.map((d) => [d.setting, d.found, d.wins]), [["num_replicas", 3, "found"]]);
});

test("a limit an operator changed wins; one still holding the mesh's own declaration is updated", () => {
  const byHand = reconcile(declared, created({ max_age: 3600e9 }), 1);
  assert.equal(byHand.update, undefined);
  assert.deepEqual(byHand.differences.map((d) => [d.setting, d.declared, d.found, d.wins]), [["max_age", 600e9, 3600e9, "found"]]);

  const newer = { ...declared, max_age: 1200e9 };
  const ours = reconcile(newer, created(), 1);
  assert.equal(ours.update?.max_age, 1200e9, "the found value was our earlier declaration");
  assert.match(ours.update?.description ?? "", /1200000000000/, "the new declaration is recorded");
});

test("settings the mesh depends on are restored, and missing subjects added beside the found ones", () => {
  const r = reconcile(declared, created({ allow_direct: false, republish: undefined, subjects: ["other.>"] }), 1);
  assert.equal(r.update?.allow_direct, true);
  assert.deepEqual(r.update?.republish, { src: "s.>", dest: "d.>" });
  assert.deepEqual(r.update?.subjects, ["other.>", "s.>"]);
  assert.ok(r.differences.every((d) => d.wins === "declared"));
});

test("a KV bucket's stream is declared as @nats-io/kv creates it", () => {
  const kv = kvBucketStream("b", { ttlMs: 30_000, republish: { src: "$KV.b.>", dest: "p.>" } });
  assert.equal(kv.name, "KV_b");
  assert.deepEqual(kv.subjects, ["$KV.b.>"]);
  assert.equal(kv.max_age, 30_000 * 1e6);
  assert.equal(kv.allow_rollup_hdrs, true);
});

test("passing refusals are retried, lasting ones are not", () => {
  assert.ok(isRetryableDeclareError(Object.assign(new Error("timeout"), { name: "TimeoutError" })));
  assert.ok(isRetryableDeclareError(new Error("insufficient resources")));
  assert.ok(isRetryableDeclareError(new Error("JetStream system temporarily unavailable")));
  assert.ok(!isRetryableDeclareError(new Error("subjects overlap with an existing stream")));
  assert.ok(!isRetryableDeclareError(new Error("replicas > 1 not supported in non-clustered mode")));
});
