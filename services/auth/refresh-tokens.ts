/**
 * Refresh tokens: opaque random strings, stored only as their SHA-256, in
 * families (one family per sign-in). Each use spends the token and issues the
 * next of its family; a spent token presented again means two parties hold
 * it, so the whole family is revoked, the newest token included.
 *
 * Exactly one of two concurrent uses of a token wins: the token's row is
 * locked (SELECT ... FOR UPDATE), so the second use waits for the first to
 * commit and then finds the token spent.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { Database, TransactionSql } from "../../platform/index.js";

/** Prefix of every refresh token: tells people and secret scanners what it is. */
export const REFRESH_TOKEN_PREFIX = "syrt_";

/** A refresh token handed to a client. */
export interface IssuedRefreshToken {
  readonly token: string;
  readonly expiresAt: Date;
  readonly familyId: string;
}

/** What a successful rotation yields: the next token and what `within` returned. */
export interface Rotation<T> {
  readonly next: IssuedRefreshToken;
  readonly result: T;
}

/** Refresh-token operations. */
export interface RefreshTokens {
  /** Issues a token of a new family for `userId` (Register, Login), inside `tx`. */
  startFamily(tx: TransactionSql, userId: string): Promise<IssuedRefreshToken>;
  /**
   * Spends `token` and issues the next one of its family, running
   * `within(tx, userId)` in the same transaction (so a failure there, e.g.
   * minting the access token, leaves the token unspent). UNAUTHENTICATED if
   * the token is unknown, expired or revoked; if it was already spent, the
   * family is revoked (committed) and then UNAUTHENTICATED is thrown.
   */
  rotate<T>(token: string, within: (tx: TransactionSql, userId: string) => Promise<T>): Promise<Rotation<T>>;
  /**
   * Revokes the family of `token` on behalf of `userId`. Succeeds for an
   * unknown, expired or revoked token; PERMISSION_DENIED if the family is
   * another user's.
   */
  revokeFamily(token: string, userId: string): Promise<void>;
  /** Deletes families whose every token expired more than a day ago. */
  prune(): Promise<void>;
}

/** SHA-256 of a token: what the table stores and looks up. */
export function hashRefreshToken(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

const invalid = (why: string) => new ConnectError(`the refresh token ${why}; sign in again with Login`, Code.Unauthenticated);

/** Creates the refresh-token operations; tokens live `ttlMs` from issue. */
export function createRefreshTokens(db: Database, ttlMs: number): RefreshTokens {
  async function issue(tx: TransactionSql, familyId: string): Promise<IssuedRefreshToken> {
    const token = REFRESH_TOKEN_PREFIX + randomBytes(32).toString("base64url");
    const expiresAt = new Date(Date.now() + ttlMs);
    await tx`insert into auth.refresh_tokens (token_hash, family_id, expires_at)
             values (${hashRefreshToken(token)}, ${familyId}, ${expiresAt})`;
    return { token, expiresAt, familyId };
  }

  return {
    async startFamily(tx, userId) {
      const familyId = randomUUID();
      await tx`insert into auth.token_families (id, user_id) values (${familyId}, ${userId})`;
      return issue(tx, familyId);
    },

    async rotate(token, within) {
      const outcome = await db.tx(async (tx) => {
        const [t] = await tx<{ family_id: string; expires_at: Date; used_at: Date | null }[]>`
          select family_id, expires_at, used_at from auth.refresh_tokens
          where token_hash = ${hashRefreshToken(token)} for update`;
        if (t === undefined) return invalid("is not known (mistyped, or its sign-in ended long ago)");
        const [f] = await tx<{ user_id: string; revoked_at: Date | null }[]>`
          select user_id, revoked_at from auth.token_families where id = ${t.family_id} for update`;
        if (f!.revoked_at !== null) return invalid("was revoked (signed out, or reused)");
        if (t.used_at !== null) {
          // Committed before the error is returned: the revocation must survive the failure.
          await tx`update auth.token_families set revoked_at = now(), revoke_reason = 'reuse' where id = ${t.family_id}`;
          return invalid("was already used, so every token of this sign-in has been revoked in case it was stolen");
        }
        if (t.expires_at.getTime() <= Date.now()) return invalid("has expired");
        await tx`update auth.refresh_tokens set used_at = now() where token_hash = ${hashRefreshToken(token)}`;
        const next = await issue(tx, t.family_id);
        return { next, result: await within(tx, f!.user_id) };
      });
      if (outcome instanceof ConnectError) throw outcome;
      return outcome;
    },

    async revokeFamily(token, userId) {
      const [row] = await db.sql<{ id: string; user_id: string }[]>`
        select f.id, f.user_id from auth.refresh_tokens t join auth.token_families f on f.id = t.family_id
        where t.token_hash = ${hashRefreshToken(token)}`;
      if (row === undefined) return;
      if (row.user_id !== userId) throw new ConnectError("this refresh token belongs to another user", Code.PermissionDenied);
      await db.sql`update auth.token_families set revoked_at = now(), revoke_reason = 'logout'
                   where id = ${row.id} and revoked_at is null`;
    },

    async prune() {
      await db.sql`delete from auth.token_families f where not exists (
                     select 1 from auth.refresh_tokens t
                     where t.family_id = f.id and t.expires_at > now() - interval '1 day')`;
    },
  };
}
