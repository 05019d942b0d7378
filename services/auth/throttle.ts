/**
 * Attempt throttling in PostgreSQL, so every auth instance counts the same
 * attempts: a fixed window per key (e.g. one account, one client address).
 * An attempt is counted before the work it guards, so parallel attempts
 * cannot slip past the limit; a success takes its count back inside the
 * transaction that records it. A blocked key unblocks when its window ends:
 * there is no permanent lockout.
 *
 * Each call is one statement (one commit): login's cost is its argon2 hash,
 * not a string of fsyncs.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { Database, TransactionSql } from "../../platform/index.js";

/** One key and the attempts it may make per window. */
export interface ThrottleCheck {
  readonly key: string;
  readonly max: number;
}

/** Counting and forgiving attempts. */
export interface Throttle {
  /**
   * Counts one attempt against every key (all sharing one window of
   * `windowMs`); rejects with RESOURCE_EXHAUSTED carrying
   * google.rpc.RetryInfo (the longest wait) when any key is over its max.
   * `message` says what was throttled.
   */
  attempt(checks: readonly ThrottleCheck[], windowMs: number, message: string): Promise<void>;
  /** Inside `tx`: clears the `reset` keys' counts and takes one attempt back from the `forgive` keys. */
  settle(tx: TransactionSql, change: { readonly reset?: readonly string[]; readonly forgive?: readonly string[] }): Promise<void>;
  /** Deletes counters whose window ended more than `olderThanMs` ago. */
  prune(olderThanMs: number): Promise<void>;
}

/** Creates a throttle over the `auth.throttle` table. */
export function createThrottle(db: Database): Throttle {
  return {
    async attempt(checks, windowMs, message) {
      const window = `${windowMs} milliseconds`;
      // Keys are upserted in sorted order, so concurrent attempts lock rows in one order (no deadlock).
      const rows = await db.sql<{ key: string; hits: number; wait_ms: number }[]>`
        insert into auth.throttle as t (key, hits, window_start)
        select k, 1, now() from unnest(${db.sql.array(checks.map((c) => c.key))}::text[]) as k order by k
        on conflict (key) do update set
          hits = case when t.window_start <= now() - ${window}::interval then 1 else t.hits + 1 end,
          window_start = case when t.window_start <= now() - ${window}::interval then now() else t.window_start end
        returning key, hits, greatest(0, extract(epoch from (window_start + ${window}::interval - now())) * 1000)::float8 as wait_ms`;
      let waitMs = 0;
      for (const row of rows) {
        const max = checks.find((c) => c.key === row.key)!.max;
        if (row.hits > max) waitMs = Math.max(waitMs, Math.ceil(row.wait_ms));
      }
      if (waitMs > 0) {
        const retry = create(RetryInfoSchema, { retryDelay: durationFromMs(waitMs) });
        throw new ConnectError(`${message}; retry in ${Math.ceil(waitMs / 1000)} s`, Code.ResourceExhausted, undefined, [{ desc: RetryInfoSchema, value: retry }]);
      }
    },
    async settle(tx, change) {
      if (change.reset?.length) await tx`delete from auth.throttle where key in ${tx(change.reset as string[])}`;
      if (change.forgive?.length) {
        await tx`update auth.throttle set hits = greatest(hits - 1, 0) where key in ${tx(change.forgive as string[])}`;
      }
    },
    async prune(olderThanMs) {
      await db.sql`delete from auth.throttle where window_start < now() - ${`${olderThanMs} milliseconds`}::interval`;
    },
  };
}
