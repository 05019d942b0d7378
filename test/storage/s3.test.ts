/**
 * The S3 blob backend against a local S3-compatible server (s3rver) through
 * the real @aws-sdk/client-s3: objects never hold the plaintext, replaced
 * and deleted versions are collected after the grace period, and a process
 * killed between the object write and the row commit leaves no row and an
 * orphan the sweeper deletes.
 */
import { Code } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { RecordService } from "../../gen/switchyard/storage/v1/record_pb.js";
import { createDatabase, createLogger } from "../../platform/index.js";
import { bearer } from "../../services/auth/testing.js";
import { createBodies, createS3BlobStore } from "../../services/storage/blobs.js";
import { createKeyring, parseKeyList } from "../../services/storage/keyring.js";
import { startTestKeys, type TestKeys } from "../gateway/support.js";
import { startLocalS3, type LocalS3 } from "../support/s3.js";
import { spawnScript } from "../support/spawn.js";
import { createTestDatabase } from "../support/infra.js";
import { failure, startStorage, type StorageUnderTest } from "./support.js";

const text = (s: string) => new TextEncoder().encode(s);

/** Polls `check` until it holds (deadline 20 s). */
async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("S3 blob backend", () => {
  let s3: LocalS3;
  let keys: TestKeys;
  before(async () => {
    s3 = await startLocalS3();
    keys = await startTestKeys();
  });
  after(async () => {
    await keys.close();
    await s3.stop();
  });

  describe("records and backups on S3", () => {
    let s: StorageUnderTest;
    let sql: postgres.Sql;
    before(async () => {
      s = await startStorage({ keys, storageEnv: { ...s3.env, STORAGE_BLOB_GRACE_MS: "300" } });
      sql = postgres(s.databaseUrl, { max: 2, onnotice: () => {} });
    });
    after(async () => {
      await sql.end();
      await s.stop();
    });

    test("objects never hold the plaintext; the row holds no bytes; reads, updates and backups work", async () => {
      const u = await s.user("pro");
      const marker = "S3-PLAINTEXT-MARKER-42";
      const r = (await u.records.createRecord({ record: { ciphertext: text(`${marker} ${"x".repeat(5000)}`), keyId: "k" } })).record!;
      const [row] = await sql<{ body: Buffer | null; blob_key: string }[]>`select body, blob_key from storage.records where record_id = ${r.recordId}`;
      assert.equal(row!.body, null);
      const object = await s3.get(row!.blob_key);
      assert.ok(!object.includes(Buffer.from(marker)));
      assert.ok(new TextDecoder().decode((await u.records.getRecord({ name: r.name })).record!.ciphertext).startsWith(marker));
      const { backup } = await u.backups.createBackup({});
      const [b] = await sql<{ blob_key: string }[]>`select blob_key from storage.backups where backup_id = ${backup!.backupId}`;
      assert.ok(!(await s3.get(b!.blob_key)).includes(Buffer.from(marker)));
      await u.records.deleteRecord({ name: r.name });
      await u.backups.restoreBackup({ name: backup!.name });
      assert.ok(new TextDecoder().decode((await u.records.getRecord({ name: r.name })).record!.ciphertext).startsWith(marker));
    });

    test("replaced and deleted versions are collected after the grace period; live objects are kept", async () => {
      const u = await s.user("pro");
      const r = (await u.records.createRecord({ record: { ciphertext: text("v1"), keyId: "k" } })).record!;
      const [{ blob_key: v1 }] = (await sql`select blob_key from storage.records where record_id = ${r.recordId}`) as unknown as [{ blob_key: string }];
      await u.records.updateRecord({ record: { name: r.name, ciphertext: text("v2") }, updateMask: { paths: ["ciphertext"] } });
      const [{ blob_key: v2 }] = (await sql`select blob_key from storage.records where record_id = ${r.recordId}`) as unknown as [{ blob_key: string }];
      assert.ok((await s3.keys()).includes(v1), "kept within the grace period (a running backup may still read it)");
      const bodies = createBodies({ db: { sql } as never, keyring: createKeyring(parseKeyList(s.masterKey)), blobs: await createS3BlobStore({ ...s3Settings(s3) }), graceMs: 300, log: createLogger("silent") });
      await until("v1 to fall due and be swept", async () => (await bodies.sweep(), !(await s3.keys()).includes(v1)));
      assert.ok((await s3.keys()).includes(v2));
      assert.equal(new TextDecoder().decode((await u.records.getRecord({ name: r.name })).record!.ciphertext), "v2");
      await u.records.deleteRecord({ name: r.name });
      await until("v2 to be swept after the delete", async () => (await bodies.sweep(), !(await s3.keys()).includes(v2)));
    });
  });

  test("a process killed between the object write and the row commit: no dangling row, and the orphan is collected", async () => {
    const db = await createTestDatabase("sy_storage_crash");
    const masterKey = Buffer.alloc(32, 7).toString("base64");
    // Migrate and hold a database for the sweeper (a regular storage process).
    const survivor = await startStorage({ keys, databaseUrl: db.url, storageEnv: { ...s3.env, STORAGE_MASTER_KEY: masterKey, STORAGE_BLOB_GRACE_MS: "500" } });
    const sql = postgres(db.url, { max: 2, onnotice: () => {} });
    try {
      const before = new Set(await s3.keys());
      const crashing = await spawnScript("test/storage/fixtures/crash-after-blob.ts", {
        env: {
          PORT: "0",
          HOST: "127.0.0.1",
          DATABASE_URL: db.url,
          AUTH_JWKS_URL: keys.jwksUrl,
          RATE_LIMIT_ENABLED: "false",
          STORAGE_MASTER_KEY: masterKey,
          STORAGE_BLOB_GRACE_MS: "500",
          ...s3.env,
        },
        ready: /port (\d+)/,
      });
      const user = `crash${Date.now().toString(36)}`;
      const client = createClient(RecordService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${crashing.port}`, interceptors: [bearer(await keys.mint(user, { tier: "pro" }))] }));
      const err = await failure(client.createRecord({ record: { ciphertext: text("never committed"), keyId: "k" } }));
      assert.ok([Code.Unavailable, Code.Canceled, Code.Internal, Code.Unknown].includes(err.code), err.message);
      await until("the process to die", async () => crashing.child.exitCode !== null || crashing.child.signalCode !== null);
      assert.equal(crashing.child.signalCode, "SIGKILL");

      assert.equal((await sql`select 1 from storage.records where user_id = ${user}`).length, 0, "no row without its blob (nor any row)");
      const orphans = (await s3.keys()).filter((k) => !before.has(k));
      assert.equal(orphans.length, 1, "the object was written");
      const [intent] = await sql`select blob_key from storage.blob_sweep where blob_key = ${orphans[0]!}`;
      assert.ok(intent, "its intent was committed before the write");

      const bodies = createBodies({
        db: createDatabase(db.url, { max: 1 }),
        keyring: createKeyring(parseKeyList(masterKey)),
        blobs: await createS3BlobStore(s3Settings(s3)),
        graceMs: 500,
        log: createLogger("silent"),
      });
      await until("the orphan to be swept", async () => (await bodies.sweep(), !(await s3.keys()).includes(orphans[0]!)));
      assert.equal((await sql`select 1 from storage.blob_sweep where blob_key = ${orphans[0]!}`).length, 0);
    } finally {
      await sql.end();
      await survivor.stop();
      await db.drop();
    }
  });
});

function s3Settings(s3: LocalS3) {
  return { endpoint: s3.endpoint, bucket: s3.bucket, region: "us-east-1", accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
}
