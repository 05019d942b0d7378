/**
 * Idempotency keys of creating RPCs: the first call with a key records the
 * request's digest and the id of what it made, in the transaction that makes
 * it; a retry within 24 hours gets that id back, and the same key with
 * another request answers ALREADY_EXISTS. Two calls racing with one key
 * serialise on the key's row: the second sees the first's result.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { createHash } from "node:crypto";
import type { TransactionSql } from "../../platform/index.js";

/** A digest of a request's meaningful content. */
export function requestDigest(parts: readonly (string | Uint8Array)[]): string {
  const h = createHash("sha256");
  for (const p of parts) {
    const bytes = typeof p === "string" ? Buffer.from(p) : p;
    h.update(`${bytes.length}:`).update(bytes);
  }
  return h.digest("base64url");
}

/**
 * Claims `key` for a new result `resultId`. Returns undefined when the key is
 * new (go on and make it), or the id the first call made.
 */
export async function claimIdempotencyKey(
  tx: TransactionSql,
  claim: { userId: string; method: string; key: string; digest: string; resultId: string },
): Promise<string | undefined> {
  const { userId, method, key, digest, resultId } = claim;
  await tx`delete from storage.idempotency where user_id = ${userId} and method = ${method} and key = ${key} and created_at < now() - interval '24 hours'`;
  const inserted = await tx`
    insert into storage.idempotency (user_id, method, key, request_digest, result_id)
    values (${userId}, ${method}, ${key}, ${digest}, ${resultId})
    on conflict do nothing returning 1`;
  if (inserted.length === 1) return undefined;
  const first = await findIdempotencyKey(tx, claim);
  if (first!.request_digest !== digest) {
    throw new ConnectError("idempotency_key: already used with a different request within 24 hours; choose a new key", Code.AlreadyExists);
  }
  return first!.result_id;
}

/** What `key` recorded for `method` within the last 24 hours, if anything. */
export async function findIdempotencyKey(
  sql: TransactionSql | import("postgres").Sql,
  k: { userId: string; method: string; key: string },
): Promise<{ request_digest: string; result_id: string } | undefined> {
  const [row] = await sql<{ request_digest: string; result_id: string }[]>`
    select request_digest, result_id from storage.idempotency
    where user_id = ${k.userId} and method = ${k.method} and key = ${k.key} and created_at >= now() - interval '24 hours'`;
  return row;
}

/** Forgets keys older than 24 hours. */
export async function pruneIdempotencyKeys(sql: TransactionSql | import("postgres").Sql): Promise<void> {
  await sql`delete from storage.idempotency where created_at < now() - interval '24 hours'`;
}
