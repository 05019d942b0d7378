/**
 * Key rotation while reads and writes continue: `npm run storage:rotate-key`
 * re-wraps every data key under the new KEK; no call fails meanwhile; every
 * record (and backup) is readable afterwards with the new key alone.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { promisify } from "node:util";
import postgres from "postgres";
import { RecordView } from "../../gen/switchyard/storage/v1/record_pb.js";
import { kekId } from "../../services/storage/keyring.js";
import { startTestKeys } from "../gateway/support.js";
import { createTestDatabase } from "../support/infra.js";
import { startStorage } from "./support.js";

const run = promisify(execFile);
const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

test("rotation under load: nothing fails, every record is readable afterwards under the new key alone", async () => {
  const keys = await startTestKeys();
  const db = await createTestDatabase("sy_storage_rotate");
  const k1 = randomBytes(32).toString("base64");
  const k2 = randomBytes(32).toString("base64");
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  const expected = new Map<string, string>();
  const token = await keys.mint("rotating-user", { tier: "pro", ttlS: 3600 });
  try {
    // Phase 1: records and a backup under K1.
    const old = await startStorage({ keys, databaseUrl: db.url, storageEnv: { STORAGE_MASTER_KEY: k1 } });
    const c1 = old.clients(token);
    for (let i = 0; i < 300; i++) {
      const r = (await c1.records.createRecord({ record: { ciphertext: text(`old-${i}`), keyId: "k" } })).record!;
      expected.set(r.name, `old-${i}`);
    }
    const { backup } = await c1.backups.createBackup({});
    await old.stop();

    // Phase 2: the service restarted with "K2,K1"; load runs while the rotation does.
    const both = await startStorage({ keys, databaseUrl: db.url, storageEnv: { STORAGE_MASTER_KEY: `${k2},${k1}` } });
    const c2 = both.clients(token);
    const names = [...expected.keys()];
    let running = true;
    const failures: unknown[] = [];
    let calls = 0;
    // Each worker owns its own records, so the last update it saw is the one stored.
    const worker = async (w: number) => {
      const mine = names.filter((_, j) => j % 4 === w);
      for (let i = 0; running; i++) {
        const name = mine[(i * 31) % mine.length]!;
        try {
          if (i % 3 === 0) {
            const value = `new-${w}-${i}`;
            await c2.records.updateRecord({ record: { name, ciphertext: text(value) }, updateMask: { paths: ["ciphertext"] } });
            expected.set(name, value);
          } else {
            const got = await c2.records.getRecord({ name });
            assert.ok(decode(got.record!.ciphertext).length > 0);
          }
          calls++;
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const workers = [0, 1, 2, 3].map(worker);
    while (calls < 20) await new Promise((r) => setImmediate(r));
    const { stdout } = await run(process.execPath, ["--import", "tsx", "services/storage/rotate-key.ts"], {
      env: { ...process.env, DATABASE_URL: db.url, STORAGE_MASTER_KEY: `${k2},${k1}`, LOG_LEVEL: "silent" },
    });
    const callsDuringRotation = calls;
    running = false;
    await Promise.all(workers);
    await both.stop();
    assert.deepEqual(failures, []);
    assert.ok(callsDuringRotation > 20);
    assert.match(stdout, /re-wrapped \d+ record data keys and 1 backup data keys under key-encryption key/);
    const [left] = await sql<{ n: number }[]>`select count(*)::int as n from storage.records where kek_id <> ${kekId(Buffer.from(k2, "base64"))}`;
    assert.equal(left!.n, 0);

    // Phase 3: K1 gone; everything reads.
    const fresh = await startStorage({ keys, databaseUrl: db.url, storageEnv: { STORAGE_MASTER_KEY: k2 } });
    try {
      const c3 = fresh.clients(token);
      const seen = new Map<string, string>();
      let pageToken = "";
      do {
        const page = await c3.records.listRecords({ pageSize: 100, pageToken, view: RecordView.FULL });
        for (const r of page.records) seen.set(r.name, decode(r.ciphertext));
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      assert.deepEqual(seen, expected);
      const restored = await c3.backups.restoreBackup({ name: backup!.name });
      assert.equal(restored.restoredRecordCount, 300n);
    } finally {
      await fresh.stop();
    }
  } finally {
    await sql.end();
    await keys.close();
    await db.drop();
  }
});
