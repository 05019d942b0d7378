/**
 * The rate limiter an instance runs: it decides each request locally from a
 * lease of the shared budget (limiter.ts), so a check costs no database round
 * trip in the common case.
 *
 * - A key's first request takes a lease of k requests from PostgreSQL
 *   (k = ceil(L / 10) for a limit of L per minute, at most 1000): about ten
 *   leases a minute per busy user and instance, whatever the limit.
 * - Requests spend the lease in memory. When half of it is spent the next
 *   lease is fetched in the background, so steady traffic never waits.
 * - When the database grants nothing, the refusal (with its retry delay) is
 *   remembered until that delay passes: a user over their limit costs no
 *   round trips either.
 * - Unused requests go back to the shared budget once their lease is
 *   `leaseMs` old (default 1 s), and when the process stops. So a busy key
 *   costs an instance one lease per `leaseMs` or per k requests, whichever
 *   comes first (plus a refund), and the request that finds its lease
 *   expired waits for that one round trip; every other request is decided in
 *   memory.
 *
 * Accuracy, for N instances and a limit of L per minute: every admitted
 * request was first counted in PostgreSQL, so counted from any moment when
 * no lease is outstanding, the union of the instances admits no more than
 * GCRA allows (a burst of L, then L per minute). Counted from an arbitrary
 * moment it can exceed that by at most the leases outstanding then: at most
 * 2k per instance (a lease and the one fetched ahead), gone within `leaseMs`
 * of an instance's last lease. The usual error is on the other side: while a
 * burst is spread over instances, up to (N − 1) · 2k requests can be refused
 * early, for at most `leaseMs`, before those leases return. With L ≤ 10,
 * k = 1 and the limiter is as exact as one round trip per request.
 * Measured (test/data/rate-limit.test.ts, bench/limits): bursts over 2 and 3
 * instances admitted exactly L.
 */
import type { BudgetStore, RateDecision, RateLimiter } from "./limiter.js";

/** Lease tuning. */
export interface LeaseOptions {
  /** Milliseconds after which unused leased requests return to the shared budget (default 1000). */
  readonly leaseMs?: number;
  /** Leases a busy key takes per minute (default 10): sets the lease size. */
  readonly leasesPerPeriod?: number;
}

interface Budget {
  perMinute: number;
  /** Leased requests not yet spent; valid until `expiresAt`. */
  tokens: number;
  expiresAt: number;
  /** While now is before this, refuse without asking. */
  refusedUntil: number;
  /** A lease on its way. */
  pending: Promise<void> | undefined;
}

const ALLOWED: RateDecision = Object.freeze({ allowed: true, retryAfterMs: 0 });
const MAX_LEASE = 1000;

/** The lease size for a limit of `perMinute` (see the module comment). */
export function leaseSize(perMinute: number, leasesPerPeriod = 10): number {
  return Math.max(1, Math.min(MAX_LEASE, Math.ceil(perMinute / leasesPerPeriod)));
}

/** Creates the limiter over `store`; call `close()` when the process stops. */
export function createLeasedLimiter(store: BudgetStore, options: LeaseOptions = {}): RateLimiter {
  const leaseMs = options.leaseMs ?? 1000;
  const leasesPerPeriod = options.leasesPerPeriod ?? 10;
  const budgets = new Map<string, Budget>();

  const fetchLease = (key: string, b: Budget): Promise<void> =>
    (b.pending ??= (async () => {
      try {
        const perMinute = b.perMinute;
        const lease = await store.lease(key, perMinute, leaseSize(perMinute, leasesPerPeriod));
        if (b.perMinute !== perMinute) {
          // The tier changed while this lease was on its way: return it.
          if (lease.granted > 0) await store.refund([{ key, perMinute, requests: lease.granted }]);
          return;
        }
        const now = Date.now();
        if (lease.granted > 0) {
          if (b.expiresAt <= now) b.tokens = 0; // left over and already returned by the sweep
          b.tokens += lease.granted;
          b.expiresAt = now + leaseMs;
        } else {
          b.refusedUntil = now + lease.retryAfterMs;
        }
      } finally {
        b.pending = undefined;
      }
    })());

  const spend = (b: Budget, now: number): boolean => {
    if (b.tokens <= 0 || now >= b.expiresAt) return false;
    b.tokens--;
    return true;
  };

  const acquire = async (key: string, b: Budget): Promise<RateDecision> => {
    for (;;) {
      await fetchLease(key, b);
      const now = Date.now();
      if (spend(b, now)) return ALLOWED;
      if (now < b.refusedUntil) return { allowed: false, retryAfterMs: b.refusedUntil - now };
      // Others waiting on the same lease spent it first: lease again.
    }
  };

  /** Returns expired leftovers to the shared budget and forgets idle keys. */
  const sweep = async (all: boolean) => {
    const now = Date.now();
    const returns: { key: string; perMinute: number; requests: number }[] = [];
    for (const [key, b] of budgets) {
      if (b.pending !== undefined) continue;
      if (!all && now < b.expiresAt) continue;
      if (b.tokens > 0) returns.push({ key, perMinute: b.perMinute, requests: b.tokens });
      b.tokens = 0;
      if (now >= b.refusedUntil) budgets.delete(key);
    }
    await store.refund(returns);
  };
  let sweeping: Promise<void> | undefined;
  const timer = setInterval(() => {
    sweeping ??= sweep(false)
      .catch(() => undefined) // the requests stay counted: refusals may come early, never late
      .finally(() => (sweeping = undefined));
  }, Math.max(50, leaseMs / 2));
  timer.unref();

  return {
    take(key, perMinute) {
      let b = budgets.get(key);
      if (b === undefined) {
        b = { perMinute, tokens: 0, expiresAt: 0, refusedUntil: 0, pending: undefined };
        budgets.set(key, b);
      } else if (b.perMinute !== perMinute) {
        // A new tier: what was leased at the old rate goes back.
        if (b.tokens > 0) void store.refund([{ key, perMinute: b.perMinute, requests: b.tokens }]).catch(() => undefined);
        Object.assign(b, { perMinute, tokens: 0, expiresAt: 0, refusedUntil: 0 });
      }
      const now = Date.now();
      if (spend(b, now)) {
        if (b.tokens * 2 < leaseSize(perMinute, leasesPerPeriod) && b.pending === undefined && now >= b.refusedUntil) {
          void fetchLease(key, b).catch(() => undefined); // ahead of need; a failure shows on the next acquire
        }
        return ALLOWED;
      }
      if (now < b.refusedUntil) return { allowed: false, retryAfterMs: b.refusedUntil - now };
      return acquire(key, b);
    },
    prune: () => store.prune(),
    async close() {
      clearInterval(timer);
      await sweeping;
      await sweep(true);
    },
  };
}
