/**
 * The RecordService RPCs. Request rules (lengths, patterns, list sizes) are
 * checked by the platform from the contract before these run; what is checked
 * here is what the contract states in words: who may act for whom, label
 * keys, masks, etags, quotas.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomBytes, randomUUID } from "node:crypto";
import { type Record as RecordMsg, RecordSchema, RecordService, RecordView } from "../../gen/switchyard/storage/v1/record_pb.js";
import { type Database, type Logger, register, type ServiceRegistration, type TransactionSql } from "../../platform/index.js";
import { type Acting, actingUser, parentUser, splitName } from "./access.js";
import type { Bodies, StoredBody } from "./blobs.js";
import { claimIdempotencyKey, requestDigest } from "./idempotency.js";
import { IntegrityError, recordAad } from "./keyring.js";
import { checkLabels, sortedLabels } from "./labels.js";
import type { PageTokens } from "./page-token.js";
import { charge, type Quotas } from "./usage.js";

/** A row of storage.records. */
interface RecordRow extends StoredBody {
  readonly user_id: string;
  readonly record_id: string;
  readonly key_id: string;
  readonly content_type: string;
  readonly labels: Record<string, string>;
  readonly size_bytes: string;
  readonly etag: string;
  readonly create_time: Date;
  readonly update_time: Date;
  readonly cursor_time: string;
}

/** What the record handlers are built from. */
export interface RecordDeps {
  readonly db: Database;
  readonly bodies: Bodies;
  readonly pages: PageTokens;
  readonly quotas: Quotas;
  readonly log: Logger;
}

const MUTABLE = new Set(["ciphertext", "key_id", "content_type", "labels"]);
const DEFAULT_PAGE = 50;
const MAX_FULL_PAGE = 100;
const ID = /^[A-Za-z0-9_-]{1,64}$/;

const notFound = (name: string) => () => new ConnectError(`${name} not found`, Code.NotFound);
const newEtag = () => randomBytes(12).toString("base64url");

function toRecord(row: RecordRow, ciphertext?: Uint8Array): RecordMsg {
  return create(RecordSchema, {
    name: `users/${row.user_id}/records/${row.record_id}`,
    recordId: row.record_id,
    userId: row.user_id,
    ciphertext,
    keyId: row.key_id,
    contentType: row.content_type,
    labels: row.labels,
    sizeBytes: BigInt(row.size_bytes),
    etag: row.etag,
    createTime: timestampFromDate(row.create_time),
    updateTime: timestampFromDate(row.update_time),
  });
}

/** Creates the RecordService registration. */
export function createRecordHandlers(deps: RecordDeps): ServiceRegistration {
  const { db, bodies, pages, quotas, log } = deps;

  /** The record's client ciphertext, decrypted from our encryption at rest; DATA_LOSS (logged, nothing leaked) when it fails. */
  async function plaintextOf(row: RecordRow): Promise<Buffer> {
    try {
      return await bodies.read(row, recordAad(row.user_id, row.record_id));
    } catch (err) {
      if (!(err instanceof IntegrityError)) throw err;
      log.error({ userId: row.user_id, recordId: row.record_id, kekId: row.kek_id }, "a record's stored bytes failed their integrity check (tampered, or moved from another row)");
      throw new ConnectError("the record's stored bytes failed their integrity check and cannot be served; the operator has been alerted", Code.DataLoss);
    }
  }

  async function selectRecord(sql: TransactionSql | Database["sql"], userId: string, recordId: string, lock: boolean): Promise<RecordRow | undefined> {
    const rows = lock
      ? await sql<RecordRow[]>`select *, create_time::text as cursor_time from storage.records where user_id = ${userId} and record_id = ${recordId} for update`
      : await sql<RecordRow[]>`select *, create_time::text as cursor_time from storage.records where user_id = ${userId} and record_id = ${recordId}`;
    return rows[0];
  }

  return register(RecordService, {
    async createRecord(req, ctx) {
      const who = actingUser(ctx, parentUser(req.parent), "parent", notFound(req.parent));
      const r = req.record!;
      if (r.ciphertext.length === 0) throw new ConnectError("record.ciphertext: required on create", Code.InvalidArgument);
      if (r.keyId === "") throw new ConnectError("record.key_id: required on create", Code.InvalidArgument);
      checkLabels(r.labels, "record.labels");
      const recordId = randomUUID();
      const stored = await bodies.prepare(r.ciphertext, recordAad(who.userId, recordId));
      const row = await db.tx(async (tx) => {
        if (req.idempotencyKey !== "") {
          const digest = requestDigest([r.ciphertext, r.keyId, r.contentType, JSON.stringify(sortedLabels(r.labels))]);
          const first = await claimIdempotencyKey(tx, { userId: who.userId, method: "CreateRecord", key: req.idempotencyKey, digest, resultId: recordId });
          if (first !== undefined) {
            const existing = await selectRecord(tx, who.userId, first, false);
            if (existing === undefined) throw new ConnectError("idempotency_key: its record was created and has been deleted since; choose a new key", Code.AlreadyExists);
            return existing;
          }
        }
        await charge(tx, who.userId, who.tier, { records: 1, bytes: r.ciphertext.length }, quotas);
        const [inserted] = await tx<RecordRow[]>`
          insert into storage.records (user_id, record_id, key_id, content_type, labels, size_bytes, etag, body, blob_key, wrapped_key, kek_id)
          values (${who.userId}, ${recordId}, ${r.keyId}, ${r.contentType}, ${tx.json(r.labels)}, ${r.ciphertext.length}, ${newEtag()},
                  ${stored.body}, ${stored.blob_key}, ${stored.wrapped_key}, ${stored.kek_id})
          returning *, create_time::text as cursor_time`;
        await bodies.claim(tx, stored);
        return inserted!;
      });
      return { record: toRecord(row) };
    },

    async getRecord(req, ctx) {
      const { userId, id } = splitName(req.name);
      const who = actingUser(ctx, userId, "name", notFound(req.name));
      const row = await selectRecord(db.sql, who.userId, id, false);
      if (row === undefined) throw notFound(req.name)();
      const full = req.view !== RecordView.BASIC;
      return { record: toRecord(row, full ? await plaintextOf(row) : undefined) };
    },

    async listRecords(req, ctx) {
      const who = actingUser(ctx, parentUser(req.parent), "parent", notFound(req.parent));
      checkLabels(req.labels, "labels");
      const full = req.view === RecordView.FULL;
      if (full && req.pageSize > MAX_FULL_PAGE) {
        throw new ConnectError(`page_size: at most ${MAX_FULL_PAGE} with RECORD_VIEW_FULL, got ${req.pageSize}`, Code.InvalidArgument);
      }
      const size = req.pageSize === 0 ? DEFAULT_PAGE : req.pageSize;
      const query = ["ListRecords", who.userId, who.callerId, sortedLabels(req.labels), full];
      const after = pages.read(query, req.pageToken);
      const rows = await db.sql<RecordRow[]>`
        select *, create_time::text as cursor_time from storage.records
        where user_id = ${who.userId}
          and labels @> ${db.sql.json(req.labels)}
          ${after === undefined ? db.sql`` : db.sql`and (create_time, record_id) < (${after.time}::timestamptz, ${after.id})`}
        order by create_time desc, record_id desc
        limit ${size + 1}`;
      const page = rows.slice(0, size);
      const records = [];
      for (const row of page) records.push(toRecord(row, full ? await plaintextOf(row) : undefined));
      const last = page.at(-1);
      const nextPageToken = rows.length > size && last !== undefined ? pages.issue(query, { time: last.cursor_time, id: last.record_id }) : "";
      return { records, nextPageToken };
    },

    async updateRecord(req, ctx) {
      const r = req.record!;
      if (r.name === "") throw new ConnectError("record.name: required", Code.InvalidArgument);
      const parts = /^users\/([A-Za-z0-9_-]{1,64})\/records\/([A-Za-z0-9_-]{1,64})$/.exec(r.name);
      if (parts === null) throw new ConnectError('record.name: must be "users/{user_id}/records/{record_id}"', Code.InvalidArgument);
      const who = actingUser(ctx, parts[1]!, "record.name", notFound(r.name));
      const paths = checkMask(req.updateMask?.paths ?? [], r);
      const stored = paths.has("ciphertext") ? await bodies.prepare(r.ciphertext, recordAad(who.userId, parts[2]!)) : undefined;
      const row = await db.tx(async (tx) => {
        const old = await selectRecord(tx, who.userId, parts[2]!, true);
        if (old === undefined) throw notFound(r.name)();
        if (r.etag !== "" && r.etag !== old.etag) {
          throw new ConnectError("record.etag: the record changed since this etag was read; get it again and reapply your change", Code.Aborted);
        }
        return applyUpdate(tx, who, old, r, paths, stored);
      });
      return { record: toRecord(row) };
    },

    async deleteRecord(req, ctx) {
      const { userId, id } = splitName(req.name);
      const who = actingUser(ctx, userId, "name", notFound(req.name));
      await db.tx(async (tx) => {
        const old = await selectRecord(tx, who.userId, id, true);
        if (old === undefined) {
          if (req.allowMissing) return;
          throw notFound(req.name)();
        }
        if (req.etag !== "" && req.etag !== old.etag) {
          throw new ConnectError("etag: the record changed since this etag was read; get it again before deleting", Code.Aborted);
        }
        await tx`delete from storage.records where user_id = ${who.userId} and record_id = ${id}`;
        await charge(tx, who.userId, who.tier, { records: -1, bytes: -Number(old.size_bytes) }, quotas);
        await bodies.retire(tx, old);
      });
      return {};
    },
  });

  /** Writes the masked fields of `r` over `old` (locked), charging the change in bytes. */
  async function applyUpdate(tx: TransactionSql, who: Acting, old: RecordRow, r: RecordMsg, paths: Set<string>, stored: StoredBody | undefined): Promise<RecordRow> {
    const size = stored !== undefined ? r.ciphertext.length : Number(old.size_bytes);
    await charge(tx, who.userId, who.tier, { bytes: size - Number(old.size_bytes) }, quotas);
    const body = stored ?? old;
    const [row] = await tx<RecordRow[]>`
      update storage.records set
        key_id = ${paths.has("key_id") ? r.keyId : old.key_id},
        content_type = ${paths.has("content_type") ? r.contentType : old.content_type},
        labels = ${tx.json(paths.has("labels") ? r.labels : old.labels)},
        size_bytes = ${size},
        body = ${body.body}, blob_key = ${body.blob_key}, wrapped_key = ${body.wrapped_key}, kek_id = ${body.kek_id},
        etag = ${newEtag()}, update_time = now()
      where user_id = ${old.user_id} and record_id = ${old.record_id}
      returning *, create_time::text as cursor_time`;
    if (stored !== undefined) {
      await bodies.claim(tx, stored);
      await bodies.retire(tx, old);
    }
    return row!;
  }
}

/** The mask's paths, checked: known, mutable, and their new values valid. */
function checkMask(paths: readonly string[], r: RecordMsg): Set<string> {
  if (paths.length === 0) throw new ConnectError('update_mask: name at least one of "ciphertext", "key_id", "content_type", "labels"', Code.InvalidArgument);
  for (const p of paths) {
    if (!MUTABLE.has(p)) {
      const shown = /^[a-z_.]{1,40}$/.test(p) ? `"${p}"` : "a path";
      throw new ConnectError(`update_mask: ${shown} cannot be updated; only "ciphertext", "key_id", "content_type" and "labels" can`, Code.InvalidArgument);
    }
  }
  const set = new Set(paths);
  if (set.has("ciphertext") && r.ciphertext.length === 0) throw new ConnectError("record.ciphertext: must not be empty", Code.InvalidArgument);
  if (set.has("key_id") && !ID.test(r.keyId)) throw new ConnectError("record.key_id: must be an id (^[A-Za-z0-9_-]{1,64}$)", Code.InvalidArgument);
  if (set.has("labels")) checkLabels(r.labels, "record.labels");
  return set;
}
