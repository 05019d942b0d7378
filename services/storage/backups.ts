/**
 * The BackupService RPCs.
 *
 * CreateBackup reads the user's records, collections and vectors in one
 * REPEATABLE READ, read-only transaction: every statement sees the same
 * snapshot, so a record written during the backup is in it whole or not at
 * all. (Replaced S3 objects stay for the grace period, so the snapshot's
 * objects are still there to read.) The archive is sealed with a fresh data
 * key like a record and stored like one; retention per tier drops the oldest.
 *
 * RestoreBackup replaces, never merges: in one transaction the target user's
 * records, collections and vectors are deleted and the archive's written
 * (records re-encrypted under fresh data keys bound to the target), the
 * usage counters set to the archive's and checked against the target's
 * quotas. Restoring the same backup twice gives the same state.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { type Backup, BackupSchema, BackupService } from "../../gen/switchyard/storage/v1/backup_pb.js";
import { type Database, type Logger, register, type ServiceRegistration, type TransactionSql } from "../../platform/index.js";
import { actingUser, parentUser, splitName } from "./access.js";
import { type Archive, type ArchivedRecord, decodeArchive, encodeArchive } from "./archive.js";
import type { Bodies, StoredBody } from "./blobs.js";
import { claimIdempotencyKey, findIdempotencyKey, requestDigest } from "./idempotency.js";
import { backupAad, IntegrityError, recordAad } from "./keyring.js";
import type { PageTokens } from "./page-token.js";
import { tierIndex, tierOf, type Quotas } from "./usage.js";
import { decodeEmbedding } from "./vector-math.js";
import { writeVectors } from "./vectors.js";

/** What the backup handlers are built from. */
export interface BackupDeps {
  readonly db: Database;
  readonly bodies: Bodies;
  readonly pages: PageTokens;
  readonly quotas: Quotas;
  /** The most a user's data may be for a backup, counted as `dataBytes` does (STORAGE_BACKUP_MAX_BYTES). */
  readonly maxBackupBytes: number;
  readonly pgvector: boolean;
  readonly log: Logger;
}

interface BackupRow extends StoredBody {
  readonly user_id: string;
  readonly backup_id: string;
  readonly description: string;
  readonly record_count: string;
  readonly vector_count: string;
  readonly size_bytes: string;
  readonly create_time: Date;
  readonly cursor_time: string;
}

interface SnapshotRecord extends StoredBody {
  readonly record_id: string;
  readonly key_id: string;
  readonly content_type: string;
  readonly labels: Record<string, string>;
  readonly etag: string;
  readonly create_time: string;
  readonly update_time: string;
}

const notFound = (name: string) => () => new ConnectError(`${name} not found`, Code.NotFound);
const sizeText = (bytes: number) => `${bytes} bytes (${(bytes / (1024 * 1024)).toFixed(1)} MiB)`;
const DEFAULT_PAGE = 50;
const VECTOR_BATCH = 500;

function toBackup(row: BackupRow): Backup {
  return create(BackupSchema, {
    name: `users/${row.user_id}/backups/${row.backup_id}`,
    backupId: row.backup_id,
    userId: row.user_id,
    description: row.description,
    recordCount: BigInt(row.record_count),
    vectorCount: BigInt(row.vector_count),
    sizeBytes: BigInt(row.size_bytes),
    createTime: timestampFromDate(row.create_time),
  });
}

/** Creates the BackupService registration. */
export function createBackupHandlers(deps: BackupDeps): ServiceRegistration {
  const { db, bodies, pages, quotas, maxBackupBytes, pgvector, log } = deps;

  async function selectBackup(sql: TransactionSql | Database["sql"], userId: string, backupId: string): Promise<BackupRow | undefined> {
    const [row] = await sql<BackupRow[]>`select *, create_time::text as cursor_time from storage.backups where user_id = ${userId} and backup_id = ${backupId}`;
    return row;
  }

  /** Opens what `read` opens, turning a failed integrity check into DATA_LOSS (logged, nothing leaked). */
  async function opened(stored: StoredBody, aad: string, what: Record<string, string>): Promise<Buffer> {
    try {
      return await bodies.read(stored, aad);
    } catch (err) {
      if (!(err instanceof IntegrityError)) throw err;
      log.error(what, "stored bytes failed their integrity check during a backup or restore");
      throw new ConnectError("stored bytes failed their integrity check; the operator has been alerted", Code.DataLoss);
    }
  }

  /**
   * What the user's data weighs from the usage counters, without reading it:
   * record ciphertext plus 4 bytes per dimension of each vector (counted at
   * the widest collection's dimensions: an upper bound).
   */
  async function dataBytes(userId: string): Promise<number> {
    const [row] = await db.sql<{ bytes: string }[]>`
      select (o.record_bytes + o.vector_count * 4 * coalesce((select max(c.dimensions) from storage.collections c where c.user_id = o.user_id), 0))::text as bytes
      from storage.owners o where o.user_id = ${userId}`;
    return Number(row?.bytes ?? 0);
  }

  /**
   * Refuses, before anything is read, data too large for one archive
   * assembled in memory; a retry whose key already made a backup goes on to
   * get that backup back.
   */
  async function refuseOversized(userId: string, idempotencyKey: string): Promise<void> {
    const bytes = await dataBytes(userId);
    if (bytes <= maxBackupBytes) return;
    if (idempotencyKey !== "" && (await findIdempotencyKey(db.sql, { userId, method: "CreateBackup", key: idempotencyKey })) !== undefined) return;
    throw new ConnectError(
      `the data to back up weighs ${sizeText(bytes)}, more than one backup may hold: ${sizeText(maxBackupBytes)} (STORAGE_BACKUP_MAX_BYTES); delete some records or vectors, or ask the operator to raise the limit`,
      Code.FailedPrecondition,
    );
  }

  /** Reads the user's data as of one instant. */
  async function snapshot(userId: string): Promise<Archive> {
    const read = await db.sql.begin("isolation level repeatable read read only", async (tx) => {
      const [{ at }] = (await tx`select now()::text as at`) as unknown as [{ at: string }];
      const records = await tx<SnapshotRecord[]>`
        select record_id, key_id, content_type, labels, etag, create_time::text as create_time, update_time::text as update_time, body, blob_key, wrapped_key, kek_id
        from storage.records where user_id = ${userId} order by create_time, record_id`;
      const collections = await tx<{ collection: string; dimensions: number }[]>`
        select collection, dimensions from storage.collections where user_id = ${userId} order by collection`;
      const vectors = await tx<{ collection: string; vector_id: string; labels: Record<string, string>; embedding: Buffer }[]>`
        select collection, vector_id, labels, embedding from storage.vectors where user_id = ${userId} order by collection, vector_id`;
      return { at, records, collections: [...collections], vectors };
    });
    const records: ArchivedRecord[] = [];
    for (const r of read.records) {
      const ciphertext = await opened(r, recordAad(userId, r.record_id), { userId, recordId: r.record_id });
      records.push({
        record_id: r.record_id,
        key_id: r.key_id,
        content_type: r.content_type,
        labels: r.labels,
        etag: r.etag,
        create_time: r.create_time,
        update_time: r.update_time,
        ciphertext: ciphertext.toString("base64"),
      });
    }
    const vectors = read.vectors.map((v) => ({ collection: v.collection, vector_id: v.vector_id, labels: v.labels, embedding: v.embedding.toString("base64") }));
    return { format: 1, user_id: userId, snapshot_time: read.at, records, collections: read.collections, vectors };
  }

  /** Drops the user's oldest backups past their tier's bound. */
  async function applyRetention(tx: TransactionSql, userId: string, tier: number): Promise<void> {
    const keep = quotas.backups[tierIndex(tier)];
    const old = await tx<{ backup_id: string; blob_key: string | null }[]>`
      delete from storage.backups where user_id = ${userId} and backup_id in (
        select backup_id from storage.backups where user_id = ${userId} order by create_time desc, backup_id desc offset ${keep})
      returning backup_id, blob_key`;
    for (const b of old) await bodies.retire(tx, b);
  }

  async function createBackup(ctx: HandlerContext, parent: string, description: string, idempotencyKey: string): Promise<BackupRow> {
    const who = actingUser(ctx, parentUser(parent), "parent", notFound(parent));
    const digest = requestDigest([description]);
    const backupId = randomUUID();
    await refuseOversized(who.userId, idempotencyKey);
    const archive = await snapshot(who.userId);
    const size = archive.records.reduce((n, r) => n + Buffer.byteLength(r.ciphertext, "base64"), 0);
    const stored = await bodies.prepare(encodeArchive(archive), backupAad(who.userId, backupId));
    return db.tx(async (tx) => {
      if (idempotencyKey !== "") {
        const first = await claimIdempotencyKey(tx, { userId: who.userId, method: "CreateBackup", key: idempotencyKey, digest, resultId: backupId });
        if (first !== undefined) {
          const existing = await selectBackup(tx, who.userId, first);
          if (existing === undefined) throw new ConnectError("idempotency_key: its backup was taken and has been rotated out since; choose a new key", Code.AlreadyExists);
          return existing;
        }
      }
      const [row] = await tx<BackupRow[]>`
        insert into storage.backups (user_id, backup_id, description, record_count, vector_count, size_bytes, create_time, body, blob_key, wrapped_key, kek_id)
        values (${who.userId}, ${backupId}, ${description}, ${archive.records.length}, ${archive.vectors.length}, ${size}, ${archive.snapshot_time}::timestamptz,
                ${stored.body}, ${stored.blob_key}, ${stored.wrapped_key}, ${stored.kek_id})
        returning *, create_time::text as cursor_time`;
      await bodies.claim(tx, stored);
      await applyRetention(tx, who.userId, await tierOf(tx, who.userId, who.tier));
      return row!;
    });
  }

  /** Replaces `userId`'s records and vectors with `archive`'s; returns the counts. */
  async function replaceWith(userId: string, tier: number | undefined, archive: Archive): Promise<{ records: number; vectors: number }> {
    const prepared: { r: ArchivedRecord; stored: StoredBody; size: number }[] = [];
    for (const r of archive.records) {
      const bytes = Buffer.from(r.ciphertext, "base64");
      prepared.push({ r, stored: await bodies.prepare(bytes, recordAad(userId, r.record_id)), size: bytes.length });
    }
    const bytes = prepared.reduce((n, p) => n + p.size, 0);
    return db.tx(async (tx) => {
      await tx`insert into storage.owners (user_id, tier) values (${userId}, ${tier ?? 1}) on conflict (user_id) do update set tier = coalesce(${tier ?? null}::smallint, storage.owners.tier)`;
      const [owner] = await tx<{ tier: number }[]>`select tier from storage.owners where user_id = ${userId} for update`;
      checkRestoreQuotas(owner!.tier, archive.records.length, bytes, archive.vectors.length);
      const old = await tx<{ blob_key: string | null }[]>`delete from storage.records where user_id = ${userId} returning blob_key`;
      for (const o of old) await bodies.retire(tx, o);
      await tx`delete from storage.collections where user_id = ${userId}`;
      for (const { r, stored, size } of prepared) {
        await tx`
          insert into storage.records (user_id, record_id, key_id, content_type, labels, size_bytes, etag, create_time, update_time, body, blob_key, wrapped_key, kek_id)
          values (${userId}, ${r.record_id}, ${r.key_id}, ${r.content_type}, ${tx.json(r.labels)}, ${size}, ${r.etag}, ${r.create_time}::timestamptz, ${r.update_time}::timestamptz,
                  ${stored.body}, ${stored.blob_key}, ${stored.wrapped_key}, ${stored.kek_id})`;
        await bodies.claim(tx, stored);
      }
      await restoreVectors(tx, userId, archive);
      await tx`update storage.owners set record_count = ${archive.records.length}, record_bytes = ${bytes}, vector_count = ${archive.vectors.length} where user_id = ${userId}`;
      return { records: archive.records.length, vectors: archive.vectors.length };
    });
  }

  function checkRestoreQuotas(tier: number, records: number, bytes: number, vectors: number): void {
    const i = tierIndex(tier);
    const over = (what: string, n: number, limit: number) =>
      new ConnectError(`the backup holds ${n} ${what}, past the target's tier quota of ${limit}; nothing was changed`, Code.ResourceExhausted);
    if (records > quotas.records[i]) throw over("records", records, quotas.records[i]);
    if (bytes > quotas.bytes[i]) throw over("bytes of records", bytes, quotas.bytes[i]);
    if (vectors > quotas.vectors[i]) throw over("vectors", vectors, quotas.vectors[i]);
  }

  async function restoreVectors(tx: TransactionSql, userId: string, archive: Archive): Promise<void> {
    for (const c of archive.collections) {
      await tx`insert into storage.collections (user_id, collection, dimensions) values (${userId}, ${c.collection}, ${c.dimensions})`;
      const rows = archive.vectors
        .filter((v) => v.collection === c.collection)
        .map((v) => ({ vectorId: v.vector_id, labels: v.labels, embedding: decodeEmbedding(Buffer.from(v.embedding, "base64")) }));
      for (let i = 0; i < rows.length; i += VECTOR_BATCH) await writeVectors(tx, pgvector, userId, c.collection, c.dimensions, rows.slice(i, i + VECTOR_BATCH));
    }
  }

  return register(BackupService, {
    async createBackup(req, ctx) {
      return { backup: toBackup(await createBackup(ctx, req.parent, req.description, req.idempotencyKey)) };
    },

    async getBackup(req, ctx) {
      const { userId, id } = splitName(req.name);
      const who = actingUser(ctx, userId, "name", notFound(req.name));
      const row = await selectBackup(db.sql, who.userId, id);
      if (row === undefined) throw notFound(req.name)();
      return { backup: toBackup(row) };
    },

    async listBackups(req, ctx) {
      const who = actingUser(ctx, parentUser(req.parent), "parent", notFound(req.parent));
      const size = req.pageSize === 0 ? DEFAULT_PAGE : req.pageSize;
      const query = ["ListBackups", who.userId, who.callerId];
      const after = pages.read(query, req.pageToken);
      const rows = await db.sql<BackupRow[]>`
        select *, create_time::text as cursor_time from storage.backups where user_id = ${who.userId}
          ${after === undefined ? db.sql`` : db.sql`and (create_time, backup_id) < (${after.time}::timestamptz, ${after.id})`}
        order by create_time desc, backup_id desc limit ${size + 1}`;
      const page = rows.slice(0, size);
      const last = page.at(-1);
      return {
        backups: page.map(toBackup),
        nextPageToken: rows.length > size && last !== undefined ? pages.issue(query, { time: last.cursor_time, id: last.backup_id }) : "",
      };
    },

    async restoreBackup(req, ctx) {
      const { userId, id } = splitName(req.name);
      const owner = actingUser(ctx, userId, "name", notFound(req.name));
      const target = req.targetParent === "" ? owner : actingUser(ctx, parentUser(req.targetParent), "target_parent", notFound(req.targetParent));
      const row = await selectBackup(db.sql, owner.userId, id);
      if (row === undefined) throw notFound(req.name)();
      const archive = decodeArchive(await opened(row, backupAad(owner.userId, id), { userId: owner.userId, backupId: id }));
      const counts = await replaceWith(target.userId, target.tier, archive);
      return { backup: toBackup(row), restoredRecordCount: BigInt(counts.records), restoredVectorCount: BigInt(counts.vectors) };
    },
  });
}
