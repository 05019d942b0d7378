/**
 * The `auth.users` table: SQL for accounts, and the conversion to the
 * contract's User message.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { UserSchema, type User } from "../../gen/switchyard/auth/v1/auth_pb.js";
import type { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import type { Sql, TransactionSql } from "../../platform/index.js";

/** A row of auth.users. */
export interface UserRow {
  id: string;
  email: string;
  display_name: string;
  password_hash: string;
  tier: Tier;
  roles: string[];
  created_at: Date;
  updated_at: Date;
}

/** The User message of a row (the password hash never leaves this service). */
export function toUser(row: UserRow): User {
  return create(UserSchema, {
    name: `users/${row.id}`,
    userId: row.id,
    email: row.email,
    displayName: row.display_name,
    tier: row.tier,
    roles: row.roles,
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `id` can be a user id (a UUID), so a bad one is never sent to the uuid column. */
export function isUserId(id: string): boolean {
  return uuidPattern.test(id);
}

function emailTaken(err: unknown): never {
  if ((err as { code?: string }).code === "23505") {
    throw new ConnectError("a user with this email already exists; sign in with Login instead", Code.AlreadyExists);
  }
  throw err;
}

/** Inserts a user on the free tier; ALREADY_EXISTS if the email is taken (case-insensitively). */
export async function insertUser(tx: TransactionSql, u: { id: string; email: string; displayName: string; passwordHash: string }): Promise<UserRow> {
  const [row] = await tx<UserRow[]>`
    insert into auth.users (id, email, display_name, password_hash)
    values (${u.id}, ${u.email}, ${u.displayName}, ${u.passwordHash})
    returning *`.catch(emailTaken);
  return row!;
}

/**
 * `email` folded as the unique index and `findUserByEmail` compare it: PostgreSQL's lower(),
 * which does not always agree with JavaScript's toLowerCase() (it folds "\u0130" to "i",
 * JavaScript to "i" + U+0307).
 */
export async function foldEmail(sql: Sql | TransactionSql, email: string): Promise<string> {
  const [row] = await sql<{ folded: string }[]>`select lower(${email}::text) as folded`;
  return row!.folded;
}

/** The user with this email (case-insensitively), if any. */
export async function findUserByEmail(sql: Sql | TransactionSql, email: string): Promise<UserRow | undefined> {
  const [row] = await sql<UserRow[]>`select * from auth.users where lower(email) = lower(${email})`;
  return row;
}

/** The user with this id, if any. */
export async function findUserById(sql: Sql | TransactionSql, id: string): Promise<UserRow | undefined> {
  if (!isUserId(id)) return undefined;
  const [row] = await sql<UserRow[]>`select * from auth.users where id = ${id}`;
  return row;
}

/**
 * Sets the fields given (email, display name) and nothing else: the columns
 * written are fixed here, whatever the request carried. ALREADY_EXISTS if the
 * email belongs to another user; undefined if the user does not exist.
 */
export async function updateProfile(sql: Sql, id: string, change: { email?: string; displayName?: string }): Promise<UserRow | undefined> {
  if (!isUserId(id)) return undefined;
  const [row] = await sql<UserRow[]>`
    update auth.users set
      email = coalesce(${change.email ?? null}, email),
      display_name = coalesce(${change.displayName ?? null}, display_name),
      updated_at = now()
    where id = ${id}
    returning *`.catch(emailTaken);
  return row;
}

/** Replaces a user's password hash (the rehash at login), if it is still `old`. */
export async function replacePasswordHash(sql: Sql | TransactionSql, id: string, old: string, next: string): Promise<void> {
  await sql`update auth.users set password_hash = ${next} where id = ${id} and password_hash = ${old}`;
}

/**
 * Applies a tier change that occurred at `occurredAt`, unless a later one was
 * applied already (events of one user may arrive out of order after a
 * redelivery). Returns whether the user's tier was written.
 */
export async function applyTierChange(tx: TransactionSql, id: string, tier: Tier, occurredAt: Date): Promise<boolean> {
  const rows = await tx`
    update auth.users set tier = ${tier}, tier_changed_at = ${occurredAt}, updated_at = now()
    where id = ${id} and (tier_changed_at is null or tier_changed_at < ${occurredAt})
    returning id`;
  return rows.length > 0;
}
