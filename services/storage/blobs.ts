/**
 * Where encrypted bytes live. By default in PostgreSQL, in the row's own
 * `body` column, so a row and its bytes commit together. With
 * STORAGE_S3_ENDPOINT set, in an S3 bucket, with the row (metadata and the
 * wrapped data key) in PostgreSQL; then a row and its object cannot commit
 * together, and the order makes the failure harmless:
 *
 * 1. an intent is committed first: the object's key in storage.blob_sweep,
 *    due after the grace period (STORAGE_BLOB_GRACE_MS);
 * 2. the object is written (a fresh random key: objects are never
 *    overwritten);
 * 3. the row is committed in a transaction that also deletes the intent.
 *
 * A crash after 1 or 2 leaves no row (a row never names a blob that was not
 * written first) and an intent that falls due: the sweeper deletes the
 * object, if any, and the intent. A replaced or deleted version is handed to
 * the sweeper the same way, in the transaction that replaces it, due after
 * the grace period, so a backup reading an older snapshot still finds it.
 * The sweeper runs every minute and never deletes an object a row names.
 */
import { CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { Database, Logger, TransactionSql } from "../../platform/index.js";
import { type Envelope, IntegrityError, type Keyring } from "./keyring.js";

/** An object store for blobs (the S3 backend). */
export interface BlobStore {
  put(key: string, bytes: Uint8Array): Promise<void>;
  get(key: string): Promise<Buffer>;
  /** Deletes; succeeds when the object is already gone. */
  delete(key: string): Promise<void>;
}

/** S3 connection settings. */
export interface S3Settings {
  readonly endpoint: string;
  readonly bucket: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** A BlobStore over an S3-compatible server (path-style; checksums only where the protocol requires them). */
export async function createS3BlobStore(s: S3Settings): Promise<BlobStore & { readonly client: S3Client }> {
  const client = new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    forcePathStyle: true,
    // Since 3.729 the SDK sends CRC32 checksums that S3-compatible servers may refuse.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: s.bucket }));
  } catch {
    await client.send(new CreateBucketCommand({ Bucket: s.bucket }));
  }
  const unavailable = (err: unknown) => new ConnectError(`the blob store did not answer (${(err as Error).name})`, Code.Unavailable);
  return {
    client,
    async put(key, bytes) {
      await client.send(new PutObjectCommand({ Bucket: s.bucket, Key: key, Body: bytes })).catch((err: unknown) => {
        throw unavailable(err);
      });
    },
    async get(key) {
      try {
        const out = await client.send(new GetObjectCommand({ Bucket: s.bucket, Key: key }));
        return Buffer.from(await out.Body!.transformToByteArray());
      } catch (err) {
        if ((err as Error).name === "NoSuchKey") throw new IntegrityError();
        throw unavailable(err);
      }
    },
    async delete(key) {
      await client.send(new DeleteObjectCommand({ Bucket: s.bucket, Key: key }));
    },
  };
}

/** How an object's encrypted bytes are stored in its row. */
export interface StoredBody {
  readonly body: Buffer | null;
  readonly blob_key: string | null;
  readonly wrapped_key: Buffer;
  readonly kek_id: string;
}

/** Sealing, storing and reading objects' bytes, wherever they live. */
export interface Bodies {
  readonly backend: "postgres" | "s3";
  /**
   * Encrypts `plaintext` (bound to `aad`) and, on S3, records the intent and
   * writes the object; the row's transaction must then call `claim`.
   */
  prepare(plaintext: Uint8Array, aad: string): Promise<StoredBody>;
  /** In the row's transaction: the new object is referenced now, so the sweeper must leave it. */
  claim(tx: TransactionSql, stored: StoredBody): Promise<void>;
  /** In the transaction that drops or replaces a row: its old object goes to the sweeper. */
  retire(tx: TransactionSql, stored: Pick<StoredBody, "blob_key">): Promise<void>;
  /** Reads and decrypts; throws IntegrityError when the bytes are not this row's. */
  read(stored: StoredBody, aad: string): Promise<Buffer>;
  /** Deletes due orphans; returns how many objects it deleted. */
  sweep(): Promise<number>;
}

/** Creates the bodies of `backend` (`blobs` undefined: PostgreSQL). */
export function createBodies(deps: { db: Database; keyring: Keyring; blobs?: BlobStore; graceMs: number; log: Logger }): Bodies {
  const { db, keyring, blobs, graceMs, log } = deps;
  const grace = `${graceMs} milliseconds`;
  return {
    backend: blobs === undefined ? "postgres" : "s3",
    async prepare(plaintext, aad) {
      const env: Envelope = keyring.seal(plaintext, aad);
      if (blobs === undefined) return { body: env.body, blob_key: null, wrapped_key: env.wrappedKey, kek_id: env.kekId };
      const key = `blobs/${randomUUID()}`;
      await db.sql`insert into storage.blob_sweep (blob_key, due_at) values (${key}, now() + ${grace}::interval)`;
      await blobs.put(key, env.body);
      return { body: null, blob_key: key, wrapped_key: env.wrappedKey, kek_id: env.kekId };
    },
    async claim(tx, stored) {
      if (stored.blob_key !== null) await tx`delete from storage.blob_sweep where blob_key = ${stored.blob_key}`;
    },
    async retire(tx, stored) {
      if (stored.blob_key === null) return;
      await tx`
        insert into storage.blob_sweep (blob_key, due_at) values (${stored.blob_key}, now() + ${grace}::interval)
        on conflict (blob_key) do update set due_at = excluded.due_at`;
    },
    async read(stored, aad) {
      const body = stored.body ?? (await blobs!.get(stored.blob_key!));
      return keyring.open({ body, wrappedKey: stored.wrapped_key, kekId: stored.kek_id }, aad);
    },
    async sweep() {
      if (blobs === undefined) return 0;
      const due = await db.sql<{ blob_key: string }[]>`
        select s.blob_key from storage.blob_sweep s
        where s.due_at <= now()
          and not exists (select 1 from storage.records r where r.blob_key = s.blob_key)
          and not exists (select 1 from storage.backups b where b.blob_key = s.blob_key)
        order by s.due_at limit 500`;
      let deleted = 0;
      for (const { blob_key } of due) {
        try {
          await blobs.delete(blob_key);
          await db.sql`delete from storage.blob_sweep where blob_key = ${blob_key}`;
          deleted++;
        } catch (err) {
          log.warn({ err: (err as Error).name }, "blob sweeper could not delete an object; it retries next round");
        }
      }
      // A referenced key in the sweep list is a claim that raced a retire (never expected): drop the entry, keep the object.
      await db.sql`
        delete from storage.blob_sweep s where s.due_at <= now()
          and (exists (select 1 from storage.records r where r.blob_key = s.blob_key)
            or exists (select 1 from storage.backups b where b.blob_key = s.blob_key))`;
      return deleted;
    },
  };
}
