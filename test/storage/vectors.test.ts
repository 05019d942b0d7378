/**
 * VectorService: exact search on the real PostgreSQL (no pgvector here) and
 * on the embedded PGlite through pgvector give the same ids, order and
 * scores; pgvector's HNSW index serves the approximate path; other users see
 * nothing; bad input is refused with nothing written.
 */
import { Code } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { failure, startStorage, type StorageUnderTest, type TestUser } from "./support.js";

/** A seeded generator (mulberry32), so both databases get the same vectors. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const DIMS = 64;
const COUNT = 1000;

describe("VectorService", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "sy-storage-pglite-"));
  let plain: StorageUnderTest;
  let embedded: StorageUnderTest;
  let onPlain: TestUser;
  let onEmbedded: TestUser;
  const rnd = random(42);
  const vectors = Array.from({ length: COUNT }, (_, i) => ({
    vectorId: `v${i}`,
    embedding: Array.from({ length: DIMS }, () => rnd() * 2 - 1),
    labels: { bucket: String(i % 3) },
  }));
  const queries = Array.from({ length: 8 }, () => Array.from({ length: DIMS }, () => rnd() * 2 - 1));

  before(async () => {
    plain = await startStorage();
    embedded = await startStorage({ keys: plain.keys, platformEnv: { DATABASE_URL: "", DATA_DIR: dataDir } });
    onPlain = await plain.user("pro");
    // The same user id on both, so the two databases hold identical rows.
    onEmbedded = { ...embedded.clients(onPlain.token), id: onPlain.id, token: onPlain.token };
    for (const u of [onPlain, onEmbedded]) {
      for (let i = 0; i < COUNT; i += 500) await u.vectors.upsertVectors({ collection: "memory", vectors: vectors.slice(i, i + 500) });
    }
  });
  after(async () => {
    await embedded?.stop();
    await plain?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("exact search: same ids, order and scores (within 1e-5) with pgvector (PGlite) and without (PostgreSQL 15)", async () => {
    for (const [i, embedding] of queries.entries()) {
      const labels: Record<string, string> = i % 2 === 0 ? {} : { bucket: "1" };
      const a = await onPlain.vectors.searchVectors({ collection: "memory", embedding, topK: 20, exact: true, labels });
      const b = await onEmbedded.vectors.searchVectors({ collection: "memory", embedding, topK: 20, exact: true, labels });
      assert.equal(a.method, "exact");
      assert.equal(b.method, "exact");
      assert.equal(a.matches.length, 20);
      assert.deepEqual(a.matches.map((m) => m.vectorId), b.matches.map((m) => m.vectorId));
      for (let j = 0; j < a.matches.length; j++) assert.ok(Math.abs(a.matches[j]!.score - b.matches[j]!.score) < 1e-5, `score ${j}`);
      if (i % 2 === 1) assert.ok(a.matches.every((m) => m.labels.bucket === "1"));
    }
  });

  test("without exact, pgvector answers through its HNSW index; PostgreSQL 15 stays exact", async () => {
    const q = vectors[7]!.embedding;
    const viaIndex = await onEmbedded.vectors.searchVectors({ collection: "memory", embedding: q, topK: 5, includeEmbeddings: true });
    assert.equal(viaIndex.method, "hnsw");
    assert.equal(viaIndex.matches[0]!.vectorId, "v7");
    assert.ok(Math.abs(viaIndex.matches[0]!.score - 1) < 1e-5);
    assert.equal(viaIndex.matches[0]!.embedding.length, DIMS);
    const exact = await onPlain.vectors.searchVectors({ collection: "memory", embedding: q, topK: 5 });
    assert.equal(exact.method, "exact");
    assert.equal(exact.matches[0]!.vectorId, "v7");
  });

  test("HNSW finds a small collection's vectors among another user's many of the same size", async () => {
    const small = embedded.clients(await plain.keys.mint("small-user", { tier: "pro" }));
    await small.vectors.upsertVectors({ collection: "few", vectors: vectors.slice(0, 3).map((v, i) => ({ ...v, vectorId: `mine${i}` })) });
    const found = await small.vectors.searchVectors({ collection: "few", embedding: queries[0]!, topK: 10 });
    assert.equal(found.method, "hnsw");
    assert.deepEqual(found.matches.map((m) => m.vectorId).sort(), ["mine0", "mine1", "mine2"]);
  });

  test("another user: NOT_FOUND naming the owner; their own search of the same collection name finds only theirs", async () => {
    const other = await plain.user("pro");
    const err = await failure(other.vectors.searchVectors({ userId: onPlain.id, collection: "memory", embedding: queries[0]! }));
    assert.equal(err.code, Code.NotFound);
    assert.equal((await failure(other.vectors.upsertVectors({ userId: onPlain.id, collection: "memory", vectors: [vectors[0]!] }))).code, Code.NotFound);
    assert.equal((await failure(other.vectors.deleteVectors({ userId: onPlain.id, collection: "memory", deleteAll: true }))).code, Code.NotFound);
    assert.equal((await other.vectors.searchVectors({ collection: "memory", embedding: queries[0]! })).matches.length, 0);
    await other.vectors.upsertVectors({ collection: "memory", vectors: [{ vectorId: "mine", embedding: queries[0]! }] });
    const found = await other.vectors.searchVectors({ collection: "memory", embedding: queries[0]!, topK: 100 });
    assert.deepEqual(found.matches.map((m) => m.vectorId), ["mine"]);
    const svc = await plain.service();
    const forOther = await svc.vectors.searchVectors({ userId: other.id, collection: "memory", embedding: queries[0]!, topK: 100 });
    assert.deepEqual(forOther.matches.map((m) => m.vectorId), ["mine"]);
  });

  test("bad input: 4,097 dimensions, NaN, Infinity, a dimension mismatch, top_k 101, repeated ids; nothing written", async () => {
    const u = await plain.user("pro");
    await u.vectors.upsertVectors({ collection: "c", vectors: [{ vectorId: "a", embedding: [1, 0, 0] }] });
    const cases: [string, () => Promise<unknown>, RegExp][] = [
      ["4097 dimensions", () => u.vectors.upsertVectors({ collection: "big", vectors: [{ vectorId: "x", embedding: new Array(4097).fill(0.5) }] }), /embedding/],
      ["NaN", () => u.vectors.upsertVectors({ collection: "c", vectors: [{ vectorId: "b", embedding: [1, Number.NaN, 0] }] }), /finite/],
      ["Infinity", () => u.vectors.upsertVectors({ collection: "c", vectors: [{ vectorId: "b", embedding: [1, Number.POSITIVE_INFINITY, 0] }] }), /finite/],
      ["dimension mismatch", () => u.vectors.upsertVectors({ collection: "c", vectors: [{ vectorId: "b", embedding: [1, 0] }] }), /has 2 dimensions; collection "c" has 3/],
      ["search mismatch", () => u.vectors.searchVectors({ collection: "c", embedding: [1, 0] }), /has 2 dimensions/],
      ["NaN query", () => u.vectors.searchVectors({ collection: "c", embedding: [1, 0, Number.NaN] }), /finite/],
      ["top_k 101", () => u.vectors.searchVectors({ collection: "c", embedding: [1, 0, 0], topK: 101 }), /top_k/],
      ["repeated ids", () => u.vectors.upsertVectors({ collection: "c", vectors: [{ vectorId: "b", embedding: [1, 0, 0] }, { vectorId: "b", embedding: [0, 1, 0] }] }), /twice/],
      ["collection with ..", () => u.vectors.upsertVectors({ collection: "..", vectors: [{ vectorId: "b", embedding: [1, 0, 0] }] }), /collection/],
      ["both ids and delete_all", () => u.vectors.deleteVectors({ collection: "c", vectorIds: ["a"], deleteAll: true }), /exactly one/],
    ];
    for (const [what, call, message] of cases) {
      const err = await failure(call());
      assert.equal(err.code, Code.InvalidArgument, `${what}: ${err.message}`);
      assert.match(err.rawMessage, message, what);
    }
    const all = await u.vectors.searchVectors({ collection: "c", embedding: [1, 1, 1], topK: 100 });
    assert.deepEqual(all.matches.map((m) => m.vectorId), ["a"]);
    assert.equal((await u.vectors.searchVectors({ collection: "big", embedding: [1] })).matches.length, 0);
    assert.equal((await u.vectors.deleteVectors({ collection: "c", vectorIds: ["a", "nope"] })).deletedCount, 1);
  });

  test("vector quotas per tier", async () => {
    const s = await startStorage({ keys: plain.keys, storageEnv: { STORAGE_QUOTA_VECTORS: "3,10,10,10" } });
    try {
      const u = await s.user("free");
      await u.vectors.upsertVectors({ collection: "c", vectors: [1, 2, 3].map((i) => ({ vectorId: `v${i}`, embedding: [i, 1] })) });
      await u.vectors.upsertVectors({ collection: "c", vectors: [{ vectorId: "v1", embedding: [9, 9] }] });
      const err = await failure(u.vectors.upsertVectors({ collection: "c", vectors: [{ vectorId: "v4", embedding: [1, 1] }] }));
      assert.equal(err.code, Code.ResourceExhausted);
    } finally {
      await s.stop();
    }
  });

  test("EmbedText: the built-in feature-hashing embedder by default, deterministic and named", async () => {
    const a = await onPlain.vectors.embedText({ texts: ["the quick brown fox", "the quick brown fox", "tax returns 2026"] });
    assert.equal(a.provider, "feature-hashing");
    assert.equal(a.model, "feature-hashing-384-v1");
    assert.equal(a.dimensions, 384);
    assert.deepEqual(a.embeddings[0]!.values, a.embeddings[1]!.values);
    assert.notDeepEqual(a.embeddings[0]!.values, a.embeddings[2]!.values);
    assert.equal((await failure(onPlain.vectors.embedText({ texts: [""] }))).code, Code.InvalidArgument);
  });
});
