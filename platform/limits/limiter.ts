/**
 * A per-user request budget shared by every instance, kept in PostgreSQL.
 *
 * Why PostgreSQL rather than NATS KV: one `INSERT ... ON CONFLICT DO UPDATE`
 * decides and records a request atomically, serialised by the row lock, so a
 * burst from one user across many instances costs one round trip each and
 * never retries; KV compare-and-set needs a read and a write per request and
 * retries under exactly that contention. The table is UNLOGGED (no WAL wait
 * per request; a crash only forgets budgets), and the clock is the
 * database's, so instances with skewed clocks agree. (KV per-key TTL, which
 * would expire idle keys, is also ignored by nats-server 2.9.)
 *
 * The algorithm is GCRA (a leaky bucket in one number per key): with a limit
 * of L per minute, requests are spaced T/L apart on average with a burst of
 * up to L; `tat` is the time the bucket would be empty. A refused request
 * learns exactly how long until one more fits.
 */
import type { Sql } from "postgres";

/** The answer for one request. */
export interface RateDecision {
  readonly allowed: boolean;
  /** Milliseconds until a request would be allowed; 0 when allowed. */
  readonly retryAfterMs: number;
}

/** A shared limiter. */
export interface RateLimiter {
  /** Counts one request of `key` against `perMinute`; resolves with the decision. */
  take(key: string, perMinute: number): Promise<RateDecision>;
  /** Deletes budgets idle for over an hour (run now and then). */
  prune(): Promise<void>;
}

const PERIOD_MS = 60_000;

/** Creates a limiter over `platform.rate_limits` (a platform migration). */
export function createRateLimiter(sql: Sql): RateLimiter {
  return {
    async take(key, perMinute) {
      const interval = PERIOD_MS / perMinute;
      // now0 = the database's clock; allowed when max(tat, now0) + interval - now0 <= period.
      const [row] = await sql<{ allowed: boolean; retry_ms: number }[]>`
        with clock as (select extract(epoch from clock_timestamp()) * 1000 as now0)
        insert into platform.rate_limits as r (key, tat, allowed)
        select ${key}, now0 + ${interval}::float8, true from clock
        on conflict (key) do update set
          allowed = greatest(r.tat, excluded.tat - ${interval}::float8) + ${interval}::float8
                    - (excluded.tat - ${interval}::float8) <= ${PERIOD_MS}::float8,
          tat = case
            when greatest(r.tat, excluded.tat - ${interval}::float8) + ${interval}::float8
                 - (excluded.tat - ${interval}::float8) <= ${PERIOD_MS}::float8
            then greatest(r.tat, excluded.tat - ${interval}::float8) + ${interval}::float8
            else r.tat end
        returning allowed,
          greatest(0, tat + ${interval}::float8 - ${PERIOD_MS}::float8 - extract(epoch from clock_timestamp()) * 1000)::float8 as retry_ms`;
      return { allowed: row!.allowed, retryAfterMs: row!.allowed ? 0 : Math.max(1, Math.ceil(row!.retry_ms)) };
    },
    async prune() {
      await sql`delete from platform.rate_limits where tat < extract(epoch from clock_timestamp()) * 1000 - 3600000`;
    },
  };
}
