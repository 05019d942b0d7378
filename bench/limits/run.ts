/**
 * `npm run bench:limits`: the per-user rate limiter alone.
 *
 * - Checks per second on one instance, 64 in flight, for one busy user and
 *   for 1000 users, with the leased limiter (platform/limits/leases.ts)
 *   beside one PostgreSQL upsert per check (the limiter before leases: the
 *   same statement asked for one request), measured in the same run.
 * - Accuracy with 3 instances (3 limiters, each with its own pool and its
 *   own leases, as 3 processes would have) sharing one user's budget: a
 *   burst of 3L checks spread over them, admitted vs the limit L, beside the
 *   stated bounds (never over; short by at most (N − 1) · 2k).
 *
 * Environment: BENCH_MS (default 2000 per measurement). Uses a fresh database.
 */
import postgres from "postgres";
import { migrate, platformMigrations } from "../../platform/db/migrate.js";
import { createLeasedLimiter, leaseSize } from "../../platform/limits/leases.js";
import { createBudgetStore, type RateLimiter } from "../../platform/limits/limiter.js";
import { createTestDatabase } from "../../test/support/infra.js";

const MS = Number(process.env.BENCH_MS ?? 2000);
const INFLIGHT = 64;

/** Checks per second with `inflight` checks in flight for `ms`. */
async function rate(check: (i: number) => unknown, ms = MS): Promise<number> {
  let n = 0;
  const end = performance.now() + ms;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: INFLIGHT }, async () => {
      while (performance.now() < end) await check(n++);
    }),
  );
  return (n / (performance.now() - start)) * 1000;
}

const db = await createTestDatabase("sy_bench_limits");
const pools: postgres.Sql[] = [];
const pool = () => {
  const sql = postgres(db.url, { max: 8, onnotice: () => {} });
  pools.push(sql);
  return sql;
};
try {
  await migrate(pool(), [platformMigrations]);
  const store = createBudgetStore(pool());
  const big = 100_000_000; // never refuses: the cost of a check, not of a refusal
  const perCheck: RateLimiter["take"] = (key, perMinute) =>
    store.lease(key, perMinute, 1).then((l) => ({ allowed: l.granted > 0, retryAfterMs: l.retryAfterMs }));
  const leased = createLeasedLimiter(store);

  const rows: [string, number, number][] = [];
  for (const [label, key] of [
    ["one busy user", (_i: number) => "user:busy"],
    ["1000 users", (i: number) => `user:${i % 1000}`],
  ] as const) {
    await rate((i) => perCheck(key(i), big), 300); // warm
    await rate((i) => leased.take(key(i), big), 300);
    const base = await rate((i) => perCheck(`${key(i)}:b`, big));
    const ours = await rate((i) => leased.take(`${key(i)}:l`, big));
    rows.push([label, base, ours]);
  }
  await leased.close();

  // Accuracy: 3 instances, one user.
  const accuracy: string[] = [];
  for (const limit of [60, 600]) {
    const instances = [0, 1, 2].map(() => createLeasedLimiter(createBudgetStore(pool())));
    const key = `user:burst-${limit}`;
    let admitted = 0;
    let next = 0;
    const checks = 3 * limit;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < checks) {
          const i = next++;
          if ((await instances[i % 3]!.take(key, limit)).allowed) admitted++;
        }
      }),
    );
    const elapsedMin = (performance.now() - t0) / 60_000;
    await Promise.all(instances.map((l) => l.close()));
    const k = leaseSize(limit);
    const refill = elapsedMin * limit;
    accuracy.push(
      `  L=${String(limit).padStart(4)}/min, k=${String(k).padStart(2)}: ${checks} checks over 3 instances in ${(elapsedMin * 60_000).toFixed(0)} ms → admitted ${admitted} ` +
        `(${((admitted / limit) * 100).toFixed(1)}% of L; refill during the burst ${refill.toFixed(1)}); ` +
        `stated bounds [${limit - 2 * 2 * k}, ${(limit + refill).toFixed(1)}]: ${admitted <= Math.ceil(limit + refill) && admitted >= limit - 4 * k ? "held" : "NOT held"}`,
    );
  }

  const lines = [
    `bench:limits  ${MS} ms per measurement, ${INFLIGHT} checks in flight, one instance`,
    `  ${"".padEnd(14)} ${"one upsert per check (baseline)".padStart(32)} ${"leased (local decisions)".padStart(26)}   ratio`,
    ...rows.map(([label, base, ours]) => `  ${label.padEnd(14)} ${`${base.toFixed(0)} checks/s`.padStart(32)} ${`${ours.toFixed(0)} checks/s`.padStart(26)}   ${(ours / base).toFixed(1)}x`),
    `accuracy, 3 instances sharing one user's budget (16 checks in flight):`,
    ...accuracy,
    "",
  ];
  process.stdout.write(lines.join("\n"));
} finally {
  await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  await db.drop();
}
