/**
 * A per-user request budget shared by every instance, kept in PostgreSQL and
 * handed out to instances in leases (see leases.ts, which decides each
 * request locally).
 *
 * Why PostgreSQL rather than NATS KV: one `INSERT ... ON CONFLICT DO UPDATE`
 * decides and records a lease atomically, serialised by the row lock, so a
 * burst from one user across many instances costs one round trip per lease
 * and never retries; KV compare-and-set needs a read and a write each and
 * retries under exactly that contention. The table is UNLOGGED (no WAL wait;
 * a crash only forgives some requests), and the clock is the database's, so
 * instances with skewed clocks agree. (KV per-key TTL, which would expire
 * idle keys, is also ignored by nats-server 2.9.)
 *
 * The algorithm is GCRA (a leaky bucket in one number per key): with a limit
 * of L per minute, requests are spaced T/L apart on average with a burst of
 * up to L; `tat` is the time the bucket would be empty. A lease of n
 * requests moves `tat` n intervals on (fewer if fewer fit); a refund moves it
 * back. A refused lease learns exactly how long until one more request fits.
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
  /**
   * Counts one request of `key` against `perMinute`. Answers at once (no
   * promise) when this instance can decide alone, which is the common case.
   */
  take(key: string, perMinute: number): RateDecision | Promise<RateDecision>;
  /** Deletes budgets idle for over an hour (run now and then). */
  prune(): Promise<void>;
  /** Returns unused leased budget and stops background work. */
  close(): Promise<void>;
}

/** What the database granted. */
export interface Lease {
  /** Requests granted, 0 to `want`. */
  readonly granted: number;
  /** When nothing was granted: milliseconds until one request fits. */
  readonly retryAfterMs: number;
}

/** The shared budgets in PostgreSQL. */
export interface BudgetStore {
  /** Takes up to `want` requests of `key`'s budget at once. */
  lease(key: string, perMinute: number, want: number): Promise<Lease>;
  /** Gives back unused requests (`requests` of each key, leased at `perMinute`). */
  refund(returns: readonly { key: string; perMinute: number; requests: number }[]): Promise<void>;
  /** Deletes budgets idle for over an hour. */
  prune(): Promise<void>;
}

/** The period limits are stated over. */
export const PERIOD_MS = 60_000;

/** Creates the store over `platform.rate_limits` (platform migrations 003, 004). */
export function createBudgetStore(sql: Sql): BudgetStore {
  return {
    async lease(key, perMinute, want) {
      const interval = PERIOD_MS / perMinute;
      // now0 is the database's clock. A new key starts with an empty bucket
      // (tat = now0): up to min(want, L) fit. An existing key's bucket is
      // empty at greatest(tat, now0); g more fit while that stays within the
      // period of now0. The proposed row carries now0 as tat - granted*interval.
      const [row] = await sql<{ granted: number; retry_ms: number }[]>`
        insert into platform.rate_limits as r (key, tat, granted)
        select ${key}, c.now0 + c.g0 * ${interval}::float8, c.g0
          from (select extract(epoch from clock_timestamp()) * 1000 as now0,
                       least(${want}::int, floor(${PERIOD_MS}::float8 / ${interval}::float8 + 1e-9))::int as g0) c
        on conflict (key) do update set (tat, granted) = (
          select x.base + x.g * ${interval}::float8, x.g from (
            select b.base, greatest(0, least(${want}::int, floor((${PERIOD_MS}::float8 - (b.base - b.now0)) / ${interval}::float8 + 1e-9)))::int as g
              from (select greatest(r.tat, n.now0) as base, n.now0
                      from (select excluded.tat - excluded.granted * ${interval}::float8 as now0) n) b) x)
        returning granted,
          greatest(0, tat + ${interval}::float8 - ${PERIOD_MS}::float8 - extract(epoch from clock_timestamp()) * 1000)::float8 as retry_ms`;
      const granted = row!.granted;
      return { granted, retryAfterMs: granted > 0 ? 0 : Math.max(1, Math.ceil(row!.retry_ms)) };
    },
    async refund(returns) {
      if (returns.length === 0) return;
      await sql`
        update platform.rate_limits r set tat = r.tat - v.ms
          from (select unnest(${returns.map((r) => r.key)}::text[]) as key,
                       unnest(${returns.map((r) => (r.requests * PERIOD_MS) / r.perMinute)}::float8[]) as ms) v
         where r.key = v.key`;
    },
    async prune() {
      await sql`delete from platform.rate_limits where tat < extract(epoch from clock_timestamp()) * 1000 - 3600000`;
    },
  };
}
