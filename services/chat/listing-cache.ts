/**
 * A per-user cache of a listing fetched from another service (a user's
 * device tools, a user's plugin tools), because chat lists tools on every
 * turn and the fetch is a round trip on the way to the model's first token.
 * An event that the user's listing changed invalidates the entry, so the
 * change shows on the next turn; the TTL bounds what a missed event leaves
 * stale. Turns asking at the same time share one fetch. A failure is kept
 * for a while too (see failureTtlOfRpcError), so a service that is down or
 * not deployed does not cost every turn a round trip or a timeout.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** How the cache behaves. */
export interface ListingCacheOptions {
  /** How long an entry is reused, ms (0 = never cached). */
  readonly ttlMs: number;
  /** How long a failed fetch is answered from the cache, ms, by its error (default: not kept). */
  readonly failureTtlMs?: (err: unknown) => number;
  /** Most users kept (the least recently fetched goes first). */
  readonly maxUsers?: number;
  /** The clock, for tests. */
  readonly now?: () => number;
}

/** The cache. */
export interface ListingCache<T> {
  /** The user's listing: cached, or fetched (once, however many callers ask meanwhile); rejects with `signal`'s reason when it aborts first. */
  get(userId: string, signal: AbortSignal): Promise<T>;
  /** Forgets `userId`'s entry: the next `get` fetches, and a fetch under way is not kept. */
  invalidate(userId: string): void;
}

interface Entry<T> {
  readonly at: number;
  readonly value: Promise<T>;
  /** How long from `at` the entry is reused; shortened when the fetch fails. */
  ttlMs: number;
}

/** Transient RPC failures are kept 1 s; UNIMPLEMENTED (the service does not serve this here) for `ttlMs`. */
export function failureTtlOfRpcError(ttlMs: number): (err: unknown) => number {
  return (err) => (ConnectError.from(err).code === Code.Unimplemented ? ttlMs : Math.min(ttlMs, 1000));
}

/** Creates a cache over `fetch` (not bound to one caller's signal: other callers may wait on the same fetch). */
export function createListingCache<T>(fetch: (userId: string) => Promise<T>, options: ListingCacheOptions): ListingCache<T> {
  const { ttlMs } = options;
  const maxUsers = options.maxUsers ?? 10_000;
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry<T>>();
  return {
    get(userId, signal) {
      const hit = entries.get(userId);
      if (hit !== undefined && now() - hit.at < hit.ttlMs) return untilAborted(hit.value, signal);
      const value = fetch(userId);
      if (ttlMs > 0) {
        const entry: Entry<T> = { at: now(), value, ttlMs };
        entries.delete(userId); // re-inserted last: the Map's order is the eviction order
        entries.set(userId, entry);
        if (entries.size > maxUsers) entries.delete(entries.keys().next().value!);
        value.catch((err: unknown) => (entry.ttlMs = options.failureTtlMs?.(err) ?? 0));
      }
      return untilAborted(value, signal);
    },
    invalidate(userId) {
      entries.delete(userId);
    },
  };
}

/** `p`, or the abort reason as soon as `signal` aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => (signal.removeEventListener("abort", onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener("abort", onAbort), reject(e)),
    );
  });
}
