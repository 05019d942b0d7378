/**
 * Attempt throttling in PostgreSQL, so every auth instance counts the same
 * attempts: a fixed window per key (e.g. one account, one client address).
 * An attempt is counted before the work it guards (so parallel attempts cannot
 * slip past the limit), and a success can take its count back. A blocked key
 * unblocks when its window ends: there is no permanent lockout.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { Database } from "../../platform/db/types.js";

/** A limit: at most `max` attempts per `windowMs`. */
export interface Limit {
  readonly max: number;
  readonly windowMs: number;
}

/** Counting and forgiving attempts. */
export interface Throttle {
  /**
   * Counts one attempt against each (key, limit); rejects with
   * RESOURCE_EXHAUSTED carrying google.rpc.RetryInfo (the longest wait) when
   * any key is over its limit. `message` says what was throttled.
   */
  attempt(checks: ReadonlyArray<{ key: string; limit: Limit }>, message: string): Promise<void>;
  /** Clears a key's count (e.g. the account after a successful login). */
  reset(key: string): Promise<void>;
  /** Takes one attempt back (e.g. the client address after a success). */
  forgive(key: string): Promise<void>;
  /** Deletes counters whose window ended more than `olderThanMs` ago. */
  prune(olderThanMs: number): Promise<void>;
}

/** Creates a throttle over the `auth.throttle` table. */
export function createThrottle(db: Database): Throttle {
  return {
    async attempt(checks, message) {
      let waitMs = 0;
      for (const { key, limit } of checks) {
        const window = `${limit.windowMs} milliseconds`;
        const [row] = await db.sql<{ hits: number; wait_ms: number }[]>`
          insert into auth.throttle as t (key, hits, window_start) values (${key}, 1, now())
          on conflict (key) do update set
            hits = case when t.window_start <= now() - ${window}::interval then 1 else t.hits + 1 end,
            window_start = case when t.window_start <= now() - ${window}::interval then now() else t.window_start end
          returning hits, greatest(0, extract(epoch from (window_start + ${window}::interval - now())) * 1000)::float8 as wait_ms`;
        if (row!.hits > limit.max) waitMs = Math.max(waitMs, Math.ceil(row!.wait_ms));
      }
      if (waitMs > 0) {
        const retry = create(RetryInfoSchema, { retryDelay: durationFromMs(waitMs) });
        throw new ConnectError(`${message}; retry in ${Math.ceil(waitMs / 1000)} s`, Code.ResourceExhausted, undefined, [{ desc: RetryInfoSchema, value: retry }]);
      }
    },
    async reset(key) {
      await db.sql`delete from auth.throttle where key = ${key}`;
    },
    async forgive(key) {
      await db.sql`update auth.throttle set hits = greatest(hits - 1, 0) where key = ${key}`;
    },
    async prune(olderThanMs) {
      await db.sql`delete from auth.throttle where window_start < now() - ${`${olderThanMs} milliseconds`}::interval`;
    },
  };
}
