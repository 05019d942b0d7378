/**
 * The process's PostgreSQL pool (`postgres`), with the failure mapping every
 * service needs: connection loss and a server that is down answer
 * UNAVAILABLE, unstorable values INVALID_ARGUMENT (see errors.ts), and a
 * transaction started while serving a request gives up, UNAVAILABLE, just
 * before that request's deadline instead of outliving it.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import postgres, { type TransactionSql } from "postgres";
import { currentRequest } from "../request-context.js";
import { mapDatabaseError } from "./errors.js";
import type { Database } from "./types.js";

/** Pool options. */
export interface DatabaseOptions {
  /** Greatest number of connections (default 10). */
  readonly max?: number;
  /** Seconds to wait for a new connection before failing (default 5). */
  readonly connectTimeoutSec?: number;
  /** `application_name` shown in pg_stat_activity. */
  readonly applicationName?: string;
}

/**
 * With several hosts, `target_session_attrs=read-write` must skip a hot
 * standby. postgres.js 3.4 judges read-write by default_transaction_read_only,
 * which a hot standby reports as off, so it would settle on the standby;
 * "primary" (pg_is_in_recovery) picks the writable host, which is what
 * read-write means there.
 */
function sessionTarget(url: string): { target_session_attrs?: "primary" } {
  return /[?&]target_session_attrs=read-write(&|$)/.test(url) ? { target_session_attrs: "primary" } : {};
}

const commitHooks = new WeakMap<TransactionSql, (() => void)[]>();

/**
 * Registers `fn` to run after the transaction `tx` (opened by
 * `Database.tx`) commits; never runs if it rolls back. Returns false when
 * `tx` was not opened by `Database.tx` (the hook cannot be honoured), so a
 * caller can fall back (the outbox relay polls anyway).
 */
export function afterCommit(tx: TransactionSql, fn: () => void): boolean {
  const hooks = commitHooks.get(tx);
  if (hooks === undefined) return false;
  hooks.push(fn);
  return true;
}

/** Whether `afterCommit(tx, …)` would be honoured (`tx` was opened by `Database.tx`). */
export function canHookCommit(tx: TransactionSql): boolean {
  return commitHooks.has(tx);
}

/**
 * Creates the pool for `url` (connections open lazily, on first use). One per
 * process: services share it and keep to their own schemas.
 */
export function createDatabase(url: string, options: DatabaseOptions = {}): Database {
  const sql = postgres(url, {
    max: options.max ?? 10,
    connect_timeout: options.connectTimeoutSec ?? 5,
    idle_timeout: 60,
    max_lifetime: 30 * 60,
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? "switchyard" },
    ...sessionTarget(url),
  });
  return {
    sql,
    async tx<T>(fn: (tx: TransactionSql) => Promise<T>): Promise<T> {
      const hooks: (() => void)[] = [];
      const run = sql.begin((tx) => {
        commitHooks.set(tx, hooks);
        return fn(tx);
      }) as Promise<T>;
      let result: T;
      try {
        result = await withinDeadline(run);
      } catch (err) {
        throw mapDatabaseError(err);
      }
      for (const hook of hooks) {
        try {
          hook();
        } catch {
          // A hook's failure is not the transaction's: it committed.
        }
      }
      return result;
    },
    async ping() {
      try {
        // Ready means writable: during a failover a connection may reach a standby not yet promoted.
        const [row] = await withTimeout(sql`select pg_is_in_recovery() as standby`, 2000);
        return row?.standby === false;
      } catch {
        return false;
      }
    },
    async close() {
      await sql.end({ timeout: 5 });
    },
  };
}

/**
 * Races `work` against the current request's deadline, answering UNAVAILABLE
 * before it so the caller hears why; outside a request, or without a
 * deadline, `work` runs unbounded (the connect timeout still applies). The
 * margin (a fifth of what remains, at most 1 s) must cover a busy event loop
 * and the reply's trip: at a fixed 100 ms, a loaded 2-core machine let the
 * caller's own deadline win now and then, and it saw DEADLINE_EXCEEDED.
 */
function withinDeadline<T>(work: Promise<T>): Promise<T> {
  const deadline = currentRequest()?.deadline;
  if (deadline === undefined) return work;
  const remaining = deadline - Date.now();
  const margin = Math.min(1000, Math.max(0, remaining) * 0.2);
  return withTimeout(work, Math.max(0, remaining - margin));
}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ConnectError("the database did not answer within the call's deadline", Code.Unavailable)),
      ms,
    );
  });
  // The losing query still settles later; keep its rejection from going unhandled.
  work.catch(() => undefined);
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}
