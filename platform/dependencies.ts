/**
 * The process's shared infrastructure, created once in startProcess and only
 * when a started module needs it: the PostgreSQL pool (migrated before
 * serving), the NATS connection, the event bus, and the rate limiter. Also
 * their readiness probes and middleware, and the getters that hand them to
 * modules through ServiceContext.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { resolve } from "node:path";
import { createDatabase } from "./db/database.js";
import { dependencyErrors } from "./db/dependency-errors.js";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "./db/embedded.js";
import { migrate } from "./db/migrate.js";
import type { Database } from "./db/types.js";
import { createEventBus, type EventBus } from "./events/events.js";
import { createLeasedLimiter } from "./limits/leases.js";
import { createBudgetStore } from "./limits/limiter.js";
import { tierLimitsOf } from "./limits/vars.js";
import { rateLimit } from "./limits/middleware.js";
import type { Logger } from "./log.js";
import { connectNats, isNatsConnected } from "./nats/connection.js";
import { createStreamDeclarer, type StreamDeclarer } from "./nats/declare.js";
import { ensureLocalNats, type LocalNats } from "./nats/local-server.js";
import type { Middleware } from "./rpc/pipeline.js";
import type { ReadinessProbe } from "./server.js";
import type { ServiceContext, ServiceModule } from "./service.js";
import type { PlatformSettings } from "./settings.js";

/** What a module may ask for in `uses`; "events" implies both others. */
export type Dependency = "db" | "nats" | "events";

/** The started infrastructure of one process. */
export interface Dependencies {
  readonly db: Database | undefined;
  readonly nats: NatsConnection | undefined;
  readonly events: EventBus | undefined;
  /** Declares JetStream streams and buckets (NATS_REPLICAS, retries within NATS_DECLARE_BUDGET_MS, readiness). */
  readonly streams: StreamDeclarer | undefined;
  /**
   * `/readyz` checks: "postgres", "nats", one `jetstream <name>` per declared
   * stream or bucket (added as modules declare them), and "consumer:<durable>"
   * for each consumer started at module start.
   */
  readonly readiness: Record<string, ReadinessProbe>;
  /** Goes first in the chain: maps database/NATS failures to UNAVAILABLE / INVALID_ARGUMENT. */
  readonly errors: Middleware;
  /** Goes after the token check: the per-user rate limit (absent without a database or when disabled). */
  readonly limits: Middleware[];
  /** Defines `db`, `nats` and `events` on `ctx` for `module` (throwing getters for undeclared ones). */
  provide<C extends object>(ctx: C, module: ServiceModule): C & Pick<ServiceContext, "db" | "nats" | "events" | "streams">;
  /** Stops the event bus, then closes NATS and the pool (and what was started locally). */
  close(): Promise<void>;
}

/** Which dependencies `module` declared (migrations imply "db"). */
export function usesOf(module: ServiceModule): Set<Dependency> {
  const uses = new Set<Dependency>(module.uses ?? []);
  if (module.migrations !== undefined) uses.add("db");
  if (uses.has("events")) {
    uses.add("db");
    uses.add("nats");
  }
  return uses;
}

/**
 * Starts what `modules` need: the database (DATABASE_URL, or the embedded one
 * under DATA_DIR/pg) with every migration applied, NATS (NATS_URL, or
 * 127.0.0.1:4222 with a local nats-server started if none listens), the
 * event bus. Rejects (after closing what it opened) when a migration fails
 * or no NATS server can be had.
 */
/** Longest one dependency may take to close at shutdown. */
const CLOSE_STEP_MS = 5000;

export async function startDependencies(modules: readonly ServiceModule[], settings: PlatformSettings, log: Logger): Promise<Dependencies> {
  const needs = new Set<Dependency>();
  for (const m of modules) for (const u of usesOf(m)) needs.add(u);
  const closers: [name: string, close: () => Promise<void>][] = [];
  // Each closes within a bound: a dependency stuck on a host that is gone (a failed-over primary, a dead
  // NATS node) must not keep the process from stopping; what is left is said, and the process exits anyway.
  const closeAll = async () => {
    for (const [name, close] of closers.reverse()) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), CLOSE_STEP_MS)));
      const result = await Promise.race([close().catch((err: unknown) => log.warn({ err: String(err), dependency: name }, "closing a dependency failed")), late]);
      clearTimeout(timer);
      if (result === "late") log.warn({ dependency: name, ms: CLOSE_STEP_MS }, "a dependency did not close in time; stopping without it");
    }
    closers.length = 0;
  };
  try {
    let db: Database | undefined;
    if (needs.has("db")) {
      let url = settings.DATABASE_URL;
      if (url === "") {
        const embedded: EmbeddedPostgres = await startEmbeddedPostgres(resolve(settings.DATA_DIR, "pg"));
        closers.push(["the embedded PostgreSQL", () => embedded.stop()]);
        url = embedded.url;
        log.info({ dataDir: resolve(settings.DATA_DIR, "pg"), shared: !embedded.owner }, "using the embedded PostgreSQL (DATABASE_URL unset)");
      }
      const database = createDatabase(url, { max: settings.DATABASE_POOL_MAX, applicationName: `switchyard-${settings.INSTANCE_ID}` });
      closers.push(["the PostgreSQL pool", () => database.close()]);
      const applied = await migrate(
        database.sql,
        modules.filter((m) => usesOf(m).has("db")).map((m) => ({ service: m.name, dir: m.migrations })),
      );
      if (applied.length > 0) log.info({ migrations: applied.map((f) => `${f.service}/${f.name}`) }, "migrations applied");
      db = database;
    }
    let nats: NatsConnection | undefined;
    let streams: StreamDeclarer | undefined;
    if (needs.has("nats")) {
      let url = settings.NATS_URL;
      if (url === "") {
        const local: LocalNats | undefined = await ensureLocalNats(resolve(settings.DATA_DIR, "nats"));
        if (local !== undefined) {
          closers.push(["the local nats-server", () => local.stop()]);
          log.info({ storeDir: resolve(settings.DATA_DIR, "nats") }, "started a local nats-server (NATS_URL unset)");
        }
        url = "nats://127.0.0.1:4222";
      }
      const nc = await connectNats(url, log, { name: `switchyard-${settings.INSTANCE_ID}` });
      // drain() waits for the server; while NATS is down that could be forever.
      closers.push(["the NATS connection", async () => {
        await Promise.race([nc.drain(), new Promise((_, reject) => setTimeout(reject, 3000).unref())]).catch(() => nc.close());
      }]);
      nats = nc;
      const declarer = createStreamDeclarer(nc, { replicas: settings.NATS_REPLICAS, budgetMs: settings.NATS_DECLARE_BUDGET_MS, log: log.child({ component: "jetstream" }) });
      closers.push(["the stream declarer", async () => declarer.stop()]);
      streams = declarer;
    }
    // The declarer's own record, so the objects modules declare later show up in /readyz too.
    const readiness: Record<string, ReadinessProbe> = streams?.readiness ?? {};
    let events: EventBus | undefined;
    if (needs.has("events") && db !== undefined && nats !== undefined) {
      const bus = await createEventBus({ db, nc: nats, log, readiness, streams });
      closers.push(["the event bus", () => bus.stop()]);
      events = bus;
    }
    const limits: Middleware[] = [];
    if (db !== undefined && settings.RATE_LIMIT_ENABLED) {
      const limiter = createLeasedLimiter(createBudgetStore(db.sql));
      const timer = setInterval(() => void limiter.prune().catch(() => undefined), 10 * 60_000);
      timer.unref();
      closers.push(["the rate limiter", async () => {
        clearInterval(timer);
        await limiter.close().catch(() => undefined); // unused leases back to the shared budget
      }]);
      limits.push(rateLimit(limiter, tierLimitsOf(settings), log.child({ component: "rate-limit" })));
    }
    if (db !== undefined) readiness.postgres = () => db.ping();
    if (nats !== undefined) readiness.nats = () => isNatsConnected(nats);
    return {
      db,
      nats,
      events,
      streams,
      readiness,
      errors: dependencyErrors(),
      limits,
      provide(ctx, module) {
        const uses = usesOf(module);
        const missing = (what: Dependency) =>
          new Error(`service ${module.name} uses ctx.${what === "nats" ? "nats" : what} but does not declare it: add uses: ["${what}"] to its ServiceModule`);
        return Object.defineProperties(ctx, {
          db: { get: () => (uses.has("db") && db ? db : thrower(missing("db"))), enumerable: false },
          nats: { get: () => (uses.has("nats") && nats ? nats : thrower(missing("nats"))), enumerable: false },
          events: { get: () => (uses.has("events") && events ? events : thrower(missing("events"))), enumerable: false },
          streams: { get: () => (uses.has("nats") && streams ? streams : thrower(missing("nats"))), enumerable: false },
        }) as never;
      },
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function thrower(err: Error): never {
  throw err;
}
