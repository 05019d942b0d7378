/**
 * BackupService: a backup taken while writes go on is one instant's state
 * (every record whole or absent), restores into a fresh user with matching
 * counts and bytes, restores again to the same state (replace, not merge),
 * is encrypted at rest, kept per tier, and reached only by its owner.
 */
import { Code } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { RecordView } from "../../gen/switchyard/storage/v1/record_pb.js";
import { failure, startStorage, type StorageClients, type StorageUnderTest, type TestUser } from "./support.js";

/** A record body that says what it should be: "<tag>|" then the tag's byte repeated to `size`. */
function body(tag: string, size: number): Uint8Array {
  const head = Buffer.from(`${tag}|`);
  return Buffer.concat([head, Buffer.alloc(Math.max(0, size - head.length), tag.charCodeAt(tag.length - 1))]);
}
const whole = (b: Uint8Array) => {
  const s = Buffer.from(b).toString();
  const [tag, rest] = s.split("|");
  return rest !== undefined && [...rest].every((c) => c === tag!.at(-1));
};

/** STORAGE_BACKUP_MAX_BYTES of the storage under test: its minimum, 1 MiB. */
const BACKUP_MAX_BYTES = 1024 * 1024;

async function allRecords(c: StorageClients, parent = "") {
  const out = [];
  let pageToken = "";
  do {
    const page = await c.records.listRecords({ parent, pageSize: 100, pageToken, view: RecordView.FULL });
    out.push(...page.records);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return out;
}

describe("BackupService", () => {
  let s: StorageUnderTest;
  let sql: postgres.Sql;
  let a: TestUser;
  let svc: StorageClients;

  before(async () => {
    s = await startStorage({ storageEnv: { STORAGE_BACKUPS_KEEP: "1,3,20,50", STORAGE_BACKUP_MAX_BYTES: String(BACKUP_MAX_BYTES) } });
    sql = postgres(s.databaseUrl, { max: 2, onnotice: () => {} });
    a = await s.user("pro");
    svc = await s.service("backup-runner");
  });
  after(async () => {
    await sql.end();
    await s.stop();
  });

  test("a backup taken while writes continue, restored into a fresh user's space: counts and bytes match the snapshot", async () => {
    for (let i = 0; i < 40; i++) await a.records.createRecord({ record: { ciphertext: body(`seed${i}`, 2000 + i), keyId: "k", labels: { i: String(i) } } });
    await a.vectors.upsertVectors({ collection: "mem", vectors: Array.from({ length: 30 }, (_, i) => ({ vectorId: `v${i}`, embedding: [i, 1, 2], labels: {} })) });

    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        const n = written++;
        await a.records.createRecord({ record: { ciphertext: body(`live${n}`, 5000 + n), keyId: "k" } });
        await a.vectors.upsertVectors({ collection: "mem", vectors: [{ vectorId: `live${n}`, embedding: [n, 2, 1] }] });
      }
    })();
    // Let the writer get going, then back up while it writes. The writer starts a write only once the
    // last has finished, so writes below `finishedBefore` are done before the backup begins, and those
    // from `startedAfter` on begin after it returned; one of those is let finish before the writer stops.
    const tick = () => new Promise((r) => setImmediate(r));
    while (written < 5) await tick();
    const finishedBefore = written - 1;
    const { backup } = await a.backups.createBackup({ description: "under load" });
    const startedAfter = written;
    while (written < startedAfter + 2) await tick();
    writing = false;
    await writer;

    const fresh = `fresh${Date.now().toString(36)}`;
    const restored = await svc.backups.restoreBackup({ name: backup!.name, targetParent: `users/${fresh}` });
    assert.equal(restored.restoredRecordCount, backup!.recordCount);
    assert.equal(restored.restoredVectorCount, backup!.vectorCount);
    const records = await allRecords(svc, `users/${fresh}`);
    assert.equal(BigInt(records.length), backup!.recordCount);
    assert.equal(BigInt(records.reduce((n, r) => n + Number(r.sizeBytes), 0)), backup!.sizeBytes);
    assert.ok(records.every((r) => whole(r.ciphertext) && r.ciphertext.length === Number(r.sizeBytes)), "every record is whole");
    assert.ok(records.length >= 40 && records.length < 40 + written);
    const vectors = await svc.vectors.searchVectors({ userId: fresh, collection: "mem", embedding: [1, 1, 1], topK: 100, exact: true });
    assert.equal(BigInt(vectors.matches.length), backup!.vectorCount);
    // One instant: the live records and vectors in the backup are the same writes (each record's write precedes its vector's).
    const liveNumbers = records.map((r) => /^live(\d+)\|/.exec(Buffer.from(r.ciphertext).toString())?.[1]).filter((n) => n !== undefined).map(Number);
    for (let n = 0; n < finishedBefore; n++) assert.ok(liveNumbers.includes(n), `live${n}, written before the backup began, is in it`);
    assert.ok(liveNumbers.every((n) => n < startedAfter), `no write begun after the backup returned is in it (${liveNumbers.join(",")})`);
    const liveRecords = liveNumbers.length;
    const liveVectors = vectors.matches.filter((m) => m.vectorId.startsWith("live")).length;
    assert.ok(liveVectors === liveRecords || liveVectors === liveRecords - 1, `${liveRecords} live records, ${liveVectors} live vectors`);

    const stored = await sql<{ body: Buffer }[]>`select body from storage.backups where user_id = ${a.id}`;
    assert.ok(stored.every((r) => !r.body.includes(Buffer.from("seed1|"))), "the archive is encrypted at rest");
  });

  test("restore replaces (records made after the backup go) and a second restore gives the same state", async () => {
    const u = await s.user("pro");
    const kept = (await u.records.createRecord({ record: { ciphertext: body("kept", 100), keyId: "k" } })).record!;
    await u.vectors.upsertVectors({ collection: "c", vectors: [{ vectorId: "x", embedding: [1, 0] }] });
    const { backup } = await u.backups.createBackup({});
    await u.records.createRecord({ record: { ciphertext: body("later", 100), keyId: "k" } });
    await u.records.updateRecord({ record: { name: kept.name, ciphertext: body("changed", 50) }, updateMask: { paths: ["ciphertext"] } });
    await u.vectors.upsertVectors({ collection: "d", vectors: [{ vectorId: "y", embedding: [1, 0, 0] }] });
    for (let round = 0; round < 2; round++) {
      const r = await u.backups.restoreBackup({ name: backup!.name });
      assert.equal(r.restoredRecordCount, 1n);
      const records = await allRecords(u);
      assert.deepEqual(records.map((x) => [x.name, x.etag, Buffer.from(x.ciphertext).toString()]), [[kept.name, kept.etag, Buffer.from(body("kept", 100)).toString()]]);
      assert.equal((await u.vectors.searchVectors({ collection: "d", embedding: [1, 0, 0] })).matches.length, 0);
      assert.equal((await u.vectors.searchVectors({ collection: "c", embedding: [1, 0] })).matches.length, 1);
    }
    // The usage counters follow the restore: the quota still holds afterwards.
    const [owner] = await sql<{ record_count: string; record_bytes: string }[]>`select record_count, record_bytes from storage.owners where user_id = ${u.id}`;
    assert.deepEqual([owner!.record_count, owner!.record_bytes], ["1", "100"]);
  });

  test("another user: NOT_FOUND by name, in lists, on restore; a user cannot restore into someone else", async () => {
    const { backup } = await a.backups.createBackup({ description: "mine" });
    const b = await s.user("pro");
    assert.equal((await failure(b.backups.getBackup({ name: backup!.name }))).code, Code.NotFound);
    assert.equal((await failure(b.backups.listBackups({ parent: `users/${a.id}` }))).code, Code.NotFound);
    assert.equal((await failure(b.backups.restoreBackup({ name: backup!.name }))).code, Code.NotFound);
    assert.equal((await failure(b.backups.createBackup({ parent: `users/${a.id}` }))).code, Code.NotFound);
    assert.equal((await b.backups.listBackups({})).backups.length, 0);
    assert.equal((await failure(a.backups.restoreBackup({ name: backup!.name, targetParent: `users/${b.id}` }))).code, Code.NotFound);
    assert.equal((await failure(a.backups.getBackup({ name: `users/${a.id}/backups/..` }))).code, Code.InvalidArgument);
  });

  test("retention per tier: a free user keeps one backup; idempotency keys return the first backup", async () => {
    const f = await s.user("free");
    await f.records.createRecord({ record: { ciphertext: body("r", 10), keyId: "k" } });
    const first = (await f.backups.createBackup({ idempotencyKey: "nightly-1" })).backup!;
    const again = (await f.backups.createBackup({ idempotencyKey: "nightly-1" })).backup!;
    assert.equal(again.name, first.name);
    assert.equal((await failure(f.backups.createBackup({ idempotencyKey: "nightly-1", description: "other" }))).code, Code.AlreadyExists);
    const second = (await f.backups.createBackup({})).backup!;
    const list = await f.backups.listBackups({});
    assert.deepEqual(list.backups.map((b) => b.name), [second.name]);
    assert.equal((await failure(f.backups.getBackup({ name: first.name }))).code, Code.NotFound);
  });

  test("data past STORAGE_BACKUP_MAX_BYTES (records, or vectors at 4 bytes a dimension) is FAILED_PRECONDITION naming it, before anything is written; a retried key still gets its backup", async () => {
    const p = await s.user("pro");
    const third = Math.floor(BACKUP_MAX_BYTES / 3);
    await p.records.createRecord({ record: { ciphertext: body("a", third), keyId: "k" } });
    const first = (await p.backups.createBackup({ idempotencyKey: "before-growth" })).backup!;
    const grown = [];
    for (const tag of ["b", "c", "d"]) grown.push((await p.records.createRecord({ record: { ciphertext: body(tag, third), keyId: "k" } })).record!.name);

    const refused = await failure(p.backups.createBackup({ description: "too big" }));
    assert.equal(refused.code, Code.FailedPrecondition);
    assert.match(refused.rawMessage, /STORAGE_BACKUP_MAX_BYTES/);
    assert.deepEqual((await p.backups.listBackups({})).backups.map((b) => b.name), [first.name], "nothing was written");
    assert.equal((await p.backups.createBackup({ idempotencyKey: "before-growth" })).backup!.name, first.name, "the retry gets the backup its key made");

    await p.records.deleteRecord({ name: grown[0]! });
    const fits = (await p.backups.createBackup({ description: "fits again" })).backup!;
    assert.equal(fits.recordCount, 3n);

    const v = await s.user("pro");
    const dims = 1024;
    const count = Math.ceil(BACKUP_MAX_BYTES / (4 * dims)) + 1;
    await v.vectors.upsertVectors({ collection: "wide", vectors: Array.from({ length: count }, (_, i) => ({ vectorId: `w${i}`, embedding: Array.from({ length: dims }, (_, d) => (i + d) % 7), labels: {} })) });
    assert.equal((await failure(v.backups.createBackup({}))).code, Code.FailedPrecondition, `${count} vectors of ${dims} dimensions weigh more than ${BACKUP_MAX_BYTES} bytes`);
  });
});
