/**
 * Key rotation: re-wraps every data key not wrapped by the current KEK,
 * leaving the encrypted bytes (in PostgreSQL or S3) untouched. It works in
 * small transactions that lock the rows they re-wrap and skip rows another
 * transaction holds (`for update skip locked`), so reads and writes go on:
 * a reader holding an old wrapped key still unwraps it (the old KEK stays in
 * STORAGE_MASTER_KEY until rotation ends), and a writer's new row is wrapped
 * by the current KEK already. Rows skipped are taken on a later round.
 */
import type { Database, Logger } from "../../platform/index.js";
import { backupAad, type Keyring, recordAad } from "./keyring.js";

const BATCH = 200;
const IDLE_ROUND_MS = 100;
const MAX_IDLE_ROUNDS = 600;

/** What a rotation did. */
export interface RotationResult {
  readonly records: number;
  readonly backups: number;
  readonly kekId: string;
}

interface WrappedRow {
  readonly user_id: string;
  readonly id: string;
  readonly wrapped_key: Buffer;
  readonly kek_id: string;
}

/** A table of wrapped data keys: its name, its id column, and the AAD its keys are bound to. */
interface WrappedTable {
  readonly table: string;
  readonly idColumn: string;
  readonly aad: (userId: string, id: string) => string;
}

const recordsTable: WrappedTable = { table: "storage.records", idColumn: "record_id", aad: recordAad };
const backupsTable: WrappedTable = { table: "storage.backups", idColumn: "backup_id", aad: backupAad };

/** Re-wraps one batch of `t`'s rows; returns how many. */
async function rewrapBatch(db: Database, keyring: Keyring, t: WrappedTable): Promise<number> {
  return db.tx(async (tx) => {
    const rows = await tx<WrappedRow[]>`
      select user_id, ${tx(t.idColumn)} as id, wrapped_key, kek_id from ${tx(t.table)}
      where kek_id <> ${keyring.current.id} limit ${BATCH} for update skip locked`;
    for (const r of rows) {
      const next = keyring.rewrap(r.wrapped_key, r.kek_id, t.aad(r.user_id, r.id));
      await tx`update ${tx(t.table)} set wrapped_key = ${next.wrappedKey}, kek_id = ${next.kekId} where user_id = ${r.user_id} and ${tx(t.idColumn)} = ${r.id}`;
    }
    return rows.length;
  });
}

async function remaining(db: Database, keyring: Keyring): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`
    select (select count(*) from storage.records where kek_id <> ${keyring.current.id})
         + (select count(*) from storage.backups where kek_id <> ${keyring.current.id}) as n`;
  return Number(row!.n);
}

/** Re-wraps every data key under `keyring.current`; resolves when none is left under another KEK. */
export async function rotateDataKeys(db: Database, keyring: Keyring, log: Logger): Promise<RotationResult> {
  let records = 0;
  let backups = 0;
  let idle = 0;
  for (;;) {
    const r = await rewrapBatch(db, keyring, recordsTable);
    const b = await rewrapBatch(db, keyring, backupsTable);
    records += r;
    backups += b;
    if (r + b > 0) {
      idle = 0;
      log.info({ records, backups }, "re-wrapping data keys");
      continue;
    }
    if ((await remaining(db, keyring)) === 0) return { records, backups, kekId: keyring.current.id };
    // Every row left is locked by a writer right now: take them once it commits.
    if (++idle > MAX_IDLE_ROUNDS) throw new Error("rows stayed locked for a minute; run storage:rotate-key again");
    await new Promise((r) => setTimeout(r, IDLE_ROUND_MS));
  }
}
