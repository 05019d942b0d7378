/**
 * bench/storage: what the storage service costs, each figure beside a
 * baseline measured in the same run.
 *
 * 1. Records: Create and Get of 1 KiB and 1 MiB records through the platform
 *    (gRPC, one at a time, server in its own process) against a bare
 *    PostgreSQL INSERT / SELECT of the same bytes from this process; and the
 *    envelope encryption's own cost per MiB (seal + open) in this process.
 * 2. Vectors (384 dimensions, cosine): search over --vectors N (default
 *    10,000; also try 100,000) on PostgreSQL 15 without pgvector (exact, in
 *    the service) and on the embedded PGlite with pgvector (exact with `<=>`
 *    and HNSW): p50, p99, and HNSW's recall@10 against exact.
 * 3. Blobs: Create and Get of 1 MiB records with the S3 backend (s3rver)
 *    against PostgreSQL blobs.
 *
 *   npm run bench:storage [-- --vectors 10000 --records 100 --queries 50]
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { RecordService } from "../../gen/switchyard/storage/v1/record_pb.js";
import { VectorService } from "../../gen/switchyard/storage/v1/vector_pb.js";
import { bearer } from "../../services/auth/testing.js";
import { createKeyring } from "../../services/storage/keyring.js";
import { startTestKeys } from "../../test/gateway/support.js";
import { createTestDatabase } from "../../test/support/infra.js";
import { startLocalS3 } from "../../test/support/s3.js";
import { spawnScript, type ScriptProcess } from "../../test/support/spawn.js";

const { values } = parseArgs({ options: { vectors: { type: "string", default: "10000" }, records: { type: "string", default: "100" }, queries: { type: "string", default: "50" } } });
const VECTORS = Number(values.vectors);
const RECORDS = Number(values.records);
const QUERIES = Number(values.queries);
const DIMS = 384;

const keys = await startTestKeys();
const token = await keys.mint("bench-user", { tier: "team", ttlS: 3600 });
const quotas = { STORAGE_QUOTA_RECORDS: "1000000,1000000,1000000,1000000", STORAGE_QUOTA_BYTES: "1099511627776,1099511627776,1099511627776,1099511627776", STORAGE_QUOTA_VECTORS: "5000000,5000000,5000000,5000000" };
const cleanups: (() => Promise<unknown>)[] = [];

async function server(env: Record<string, string>): Promise<{ records: Client<typeof RecordService>; vectors: Client<typeof VectorService> }> {
  const p: ScriptProcess = await spawnScript("bench/storage/server.ts", {
    env: { AUTH_JWKS_URL: keys.jwksUrl, STORAGE_MASTER_KEY: randomBytes(32).toString("base64"), ...quotas, ...env },
    stderr: "inherit",
  });
  cleanups.push(() => p.stop());
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${p.port}`, interceptors: [bearer(token)] });
  return { records: createClient(RecordService, transport), vectors: createClient(VectorService, transport) };
}

/** Latencies of `n` calls of `fn`, one at a time, in ms (after 3 warm-up calls). */
async function timed(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 3; i++) await fn(-1 - i);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn(i);
    out.push(performance.now() - t);
  }
  return out.sort((a, b) => a - b);
}
const pct = (s: number[], p: number) => s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))]!;
const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const line = (what: string, s: number[], base?: number[]) =>
  console.log(`  ${what.padEnd(46)} p50 ${f(pct(s, 50)).padStart(7)} ms  p99 ${f(pct(s, 99)).padStart(7)} ms${base ? `   ratio p50 ${(pct(s, 50) / pct(base, 50)).toFixed(2)}x the baseline` : ""}`);

try {
  // 1. Records against bare PostgreSQL.
  const db = await createTestDatabase("sy_bench_storage");
  cleanups.push(() => db.drop());
  const pg = await server({ DATABASE_URL: db.url });
  const bare = postgres(db.url, { max: 1, onnotice: () => {} });
  cleanups.push(() => bare.end());
  await bare`create table if not exists public.bench_bare (id text primary key, data bytea not null)`;
  console.log(`records, one call at a time (${RECORDS} per cell; baseline: bare INSERT/SELECT of the same bytes)`);
  for (const size of [1024, 1024 * 1024]) {
    const bytes = randomBytes(size);
    const n = size > 4096 ? Math.max(10, Math.floor(RECORDS / 4)) : RECORDS;
    const label = size > 4096 ? "1 MiB" : "1 KiB";
    const bareInsert = await timed(n, (i) => bare`insert into public.bench_bare values (${`${size}-${i}`}, ${bytes})`);
    const names: string[] = [];
    const create = await timed(n, async () => names.push((await pg.records.createRecord({ record: { ciphertext: bytes, keyId: "k" } })).record!.name));
    line(`bare INSERT ${label}`, bareInsert);
    line(`CreateRecord ${label}`, create, bareInsert);
    const bareSelect = await timed(n, (i) => bare`select data from public.bench_bare where id = ${`${size}-${Math.max(0, i)}`}`);
    const get = await timed(n, (i) => pg.records.getRecord({ name: names[Math.max(0, i) % names.length]! }));
    line(`bare SELECT ${label}`, bareSelect);
    line(`GetRecord ${label}`, get, bareSelect);
  }
  const ring = createKeyring([randomBytes(32)]);
  const mib = randomBytes(1024 * 1024);
  const crypto = await timed(30, async () => ring.open(ring.seal(mib, "a"), "a"));
  line("envelope seal + open of 1 MiB (in process)", crypto);

  // 2. Vectors.
  const dataDir = mkdtempSync(join(tmpdir(), "sy-bench-pglite-"));
  cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
  const lite = await server({ DATABASE_URL: "", DATA_DIR: dataDir });
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  const vec = () => Array.from({ length: DIMS }, rnd);
  const loadStart = performance.now();
  for (let i = 0; i < VECTORS; i += 500) {
    const batch = Array.from({ length: Math.min(500, VECTORS - i) }, (_, j) => ({ vectorId: `v${i + j}`, embedding: vec() }));
    await pg.vectors.upsertVectors({ collection: "bench", vectors: batch });
    await lite.vectors.upsertVectors({ collection: "bench", vectors: batch });
  }
  console.log(`\nvectors: ${VECTORS} x ${DIMS} loaded into both in ${((performance.now() - loadStart) / 1000).toFixed(1)} s; top 10, ${QUERIES} queries each`);
  const queries = Array.from({ length: QUERIES }, vec);
  const exactIds: string[][] = [];
  const exactHere = await timed(QUERIES, async (i) => {
    const r = await pg.vectors.searchVectors({ collection: "bench", embedding: queries[Math.max(0, i)]!, topK: 10, exact: true });
    if (i >= 0) exactIds[i] = r.matches.map((m) => m.vectorId);
  });
  const exactPgv = await timed(QUERIES, (i) => lite.vectors.searchVectors({ collection: "bench", embedding: queries[Math.max(0, i)]!, topK: 10, exact: true }));
  let hits = 0;
  const hnsw = await timed(QUERIES, async (i) => {
    const r = await lite.vectors.searchVectors({ collection: "bench", embedding: queries[Math.max(0, i)]!, topK: 10 });
    if (i >= 0) hits += r.matches.filter((m) => exactIds[i]!.includes(m.vectorId)).length;
  });
  line("exact, PostgreSQL 15 (no pgvector), in service", exactHere);
  line("exact, PGlite + pgvector <=>", exactPgv, exactHere);
  line("HNSW, PGlite + pgvector", hnsw, exactPgv);
  console.log(`  HNSW recall@10 against exact: ${(hits / (QUERIES * 10)).toFixed(3)}`);

  // 3. Blobs: S3 against PostgreSQL.
  const s3 = await startLocalS3("bench-storage");
  cleanups.push(() => s3.stop());
  const db2 = await createTestDatabase("sy_bench_storage_s3");
  cleanups.push(() => db2.drop());
  const onS3 = await server({ DATABASE_URL: db2.url, ...s3.env });
  const bytes = randomBytes(1024 * 1024);
  const n = Math.max(10, Math.floor(RECORDS / 4));
  console.log(`\nblobs: 1 MiB records, ${n} per cell (baseline: PostgreSQL blobs, from section 1's server)`);
  const names: string[] = [];
  const pgCreate = await timed(n, () => pg.records.createRecord({ record: { ciphertext: bytes, keyId: "k" } }));
  const s3Create = await timed(n, async () => names.push((await onS3.records.createRecord({ record: { ciphertext: bytes, keyId: "k" } })).record!.name));
  line("CreateRecord 1 MiB, PostgreSQL blobs", pgCreate);
  line("CreateRecord 1 MiB, S3 (s3rver)", s3Create, pgCreate);
  const pgNames = (await pg.records.listRecords({ pageSize: 50 })).records.map((r) => r.name);
  const pgGet = await timed(n, (i) => pg.records.getRecord({ name: pgNames[Math.max(0, i) % pgNames.length]! }));
  const s3Get = await timed(n, (i) => onS3.records.getRecord({ name: names[Math.max(0, i) % names.length]! }));
  line("GetRecord 1 MiB, PostgreSQL blobs", pgGet);
  line("GetRecord 1 MiB, S3 (s3rver)", s3Get, pgGet);
} finally {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await keys.close();
}
