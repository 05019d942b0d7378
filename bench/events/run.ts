/**
 * `npm run bench:events`: events per second and commit-to-handler latency
 * through the outbox (transaction → relay → JetStream → durable consumer
 * whose handler writes its side effect in its own transaction), beside raw
 * JetStream publish-and-consume measured in the same run on the same
 * nats-server, with the ratio. Checks that no side effect is lost or doubled.
 * Also times `npm run migrate` on an empty database (and again, with
 * nothing to apply).
 *
 * CPU figures are this process's own (process.cpuUsage) per event or
 * transaction: the producers, relay and consumer all run here. At 64
 * producers the work per event is also accounted (accounting.ts): the
 * statements and transactions this process sent, and the CPU time of the
 * database's backends and of nats-server (Linux).
 *
 * Environment: BENCH_EVENTS (default 3000 per mode), BENCH_INFLIGHT
 * (producers in flight, default 64), BENCH_CONCURRENCY (handlers in flight,
 * default 32). Uses a private nats-server and a fresh database.
 */
import { create } from "@bufbuild/protobuf";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { UserLoggedInSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { createDatabase } from "../../platform/db/database.js";
import { migrate } from "../../platform/db/migrate.js";
import { createEventBus } from "../../platform/events/events.js";
import { createLogger } from "../../platform/log.js";
import { connectNats } from "../../platform/nats/connection.js";
import { createTestDatabase, startNats } from "../../test/support/infra.js";
import { countStatements, natsServerPid, startCpuMeter } from "./accounting.js";

const N = Number(process.env.BENCH_EVENTS ?? 3000);
const INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 64);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const log = createLogger("silent");
/**
 * Events at the start of each run left out of its latencies (still counted
 * for loss, duplication and throughput): they open the pool's connections,
 * the consumer's first pull and the JIT's first compilations, a cold start
 * that one-at-a-time p99 (the 3 worst of 300) would otherwise measure alone.
 */
const WARMUP = 30;
const run = promisify(execFile);

interface Result {
  readonly perSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly lost: number;
  readonly duplicated: number;
  /** This process's CPU per event, in microseconds. */
  readonly cpuUs: number;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** Runs `count` producers `inflight` at a time. */
async function produce(count: number, one: (i: number) => Promise<void>, inflight = INFLIGHT): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (next < count) await one(next++);
    }),
  );
}

function summarise(start: number, end: number, cpu: NodeJS.CpuUsage, latencies: number[], delivered: number, lost: number, duplicated: number): Result {
  latencies.sort((a, b) => a - b);
  const cpuUs = (cpu.user + cpu.system) / Math.max(1, delivered);
  return { perSecond: (delivered / (end - start)) * 1000, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), lost, duplicated, cpuUs };
}

async function timeMigrate(url: string): Promise<{ emptyMs: number; emptyScriptMs: number; noopMs: number }> {
  const once = async () => {
    const t = performance.now();
    const { stdout } = await run("npm", ["run", "-s", "migrate"], { env: { ...process.env, DATABASE_URL: url } });
    return { wall: performance.now() - t, script: Number(/\((\d+) ms\)/.exec(stdout)?.[1]) };
  };
  const empty = await once();
  const noop = await once();
  return { emptyMs: empty.wall, emptyScriptMs: empty.script, noopMs: noop.wall };
}

async function rawJetStream(url: string, count: number, inflight = INFLIGHT): Promise<Result> {
  const nc = await connectNats(url, log);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await jsm.streams.add({ name: "BENCH_RAW", subjects: ["bench.raw"] });
  await jsm.consumers.add("BENCH_RAW", { durable_name: "raw", ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
  const sentAt = new Map<number, number>();
  const latencies: number[] = [];
  const seen = new Set<number>();
  let duplicated = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const messages = await (await js.consumers.get("BENCH_RAW", "raw")).consume({ max_messages: CONCURRENCY * 2 });
  void (async () => {
    for await (const m of messages) {
      const i = Number(m.string());
      if (seen.has(i)) duplicated++;
      else {
        seen.add(i);
        if (i >= WARMUP) latencies.push(performance.now() - sentAt.get(i)!);
      }
      m.ack();
      if (seen.size === count) done();
    }
  })();
  const cpu = process.cpuUsage();
  const start = performance.now();
  await produce(count, async (i) => {
    sentAt.set(i, performance.now());
    await js.publish("bench.raw", String(i), { msgID: `raw-${i}` });
  }, inflight);
  await finished;
  const end = performance.now();
  const used = process.cpuUsage(cpu);
  await messages.close();
  await jsm.streams.delete("BENCH_RAW");
  await nc.close();
  return summarise(start, end, used, latencies, seen.size, count - seen.size, duplicated);
}

/** Per event (or bare transaction): statements and transactions sent, and the CPU of PostgreSQL's backends and nats-server. */
interface Work {
  readonly statements: number;
  readonly transactions: number;
  readonly postgresUs: number;
  readonly natsUs: number;
}

/** The outbox's result, and the rate its producers committed at meanwhile. */
interface OutboxResult extends Result {
  /** Producer transactions per second, from the start to the last commit (the relay and consumer running alongside). */
  readonly committedPerSecond: number;
  readonly work: Work;
}

const POOL_SIZE = 32;

/** Opens all of the pool's connections, so their backends can be metered from the start. */
async function openPool(db: ReturnType<typeof createDatabase>): Promise<void> {
  await Promise.all(Array.from({ length: POOL_SIZE }, () => db.sql`select pg_sleep(0.01)`));
}

async function outbox(url: string, nats: { url: string; port: number }, count: number, inflight = INFLIGHT): Promise<OutboxResult> {
  const natsUrl = nats.url;
  const db = createDatabase(url, { max: POOL_SIZE });
  await migrate(db.sql, []);
  await db.sql`create table if not exists public.bench_effects (event_id text not null, user_id text not null)`;
  await db.sql`truncate public.bench_effects`;
  const nc = await connectNats(natsUrl, log);
  const bus = await createEventBus({ db, nc, log });
  const committedAt = new Map<string, number>();
  const latencies: number[] = [];
  const handled = new Set<string>();
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const stop = await bus.consume({
    schema: UserLoggedInSchema,
    durable: "bench",
    concurrency: CONCURRENCY,
    handle: async (event, meta, tx) => {
      await tx`insert into public.bench_effects (event_id, user_id) values (${meta.eventId}, ${event.userId})`;
      const t = committedAt.get(event.userId);
      if (t !== undefined && !handled.has(event.userId) && Number(event.userId.slice(1)) >= WARMUP) latencies.push(performance.now() - t);
      handled.add(event.userId);
      if (handled.size === count) setImmediate(done);
    },
  });
  await openPool(db);
  const meter = await startCpuMeter(db.sql, new URL(url).pathname.slice(1), natsServerPid(nats.port));
  const sent = countStatements(db.sql);
  const cpu = process.cpuUsage();
  const start = performance.now();
  await produce(count, async (i) => {
    await db.tx((tx) => bus.publish(tx, UserLoggedInSchema, create(UserLoggedInSchema, { userId: `u${i}` })));
    committedAt.set(`u${i}`, performance.now());
  }, inflight);
  const committed = performance.now();
  await finished;
  const end = performance.now();
  const used = process.cpuUsage(cpu);
  const others = meter();
  sent.stop();
  await stop();
  // The handler's transaction commits just after `handled` fills; wait for the last ones.
  let effects = 0;
  let distinct = 0;
  for (let tries = 0; tries < 100; tries++) {
    const [r] = await db.sql<{ effects: number; distinct: number }[]>`
      select count(*)::int as effects, count(distinct user_id)::int as distinct from public.bench_effects`;
    ({ effects, distinct } = r!);
    if (distinct === count) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  await bus.stop();
  await nc.close();
  await db.close();
  const work = { statements: sent.statements / count, transactions: sent.transactions / count, postgresUs: others.postgresUs / count, natsUs: others.otherUs / count };
  return { ...summarise(start, end, used, latencies, handled.size, count - distinct, effects - distinct), committedPerSecond: (count / (committed - start)) * 1000, work };
}

/** The same producers committing bare transactions (BEGIN, one INSERT, COMMIT): the database's own ceiling. */
async function postgresCeiling(url: string, count: number): Promise<{ perSecond: number; cpuUs: number; work: Work }> {
  const db = createDatabase(url, { max: POOL_SIZE });
  await db.sql`create table if not exists public.bench_bare (id bigint generated always as identity, v text)`;
  await openPool(db);
  const meter = await startCpuMeter(db.sql, new URL(url).pathname.slice(1));
  const sent = countStatements(db.sql);
  const cpu = process.cpuUsage();
  const start = performance.now();
  await produce(count, async (i) => {
    await db.tx((tx) => tx`insert into public.bench_bare (v) values (${`u${i}`})`);
  });
  const perSecond = (count / (performance.now() - start)) * 1000;
  const used = process.cpuUsage(cpu);
  const others = meter();
  sent.stop();
  await db.close();
  const work = { statements: sent.statements / count, transactions: sent.transactions / count, postgresUs: others.postgresUs / count, natsUs: 0 };
  return { perSecond, cpuUs: (used.user + used.system) / count, work };
}

const nats = await startNats();
const migrateDb = await createTestDatabase("sy_bench_migrate");
const eventsDb = await createTestDatabase("sy_bench_events");
try {
  const m = await timeMigrate(migrateDb.url);
  // Warm both paths (JIT, connections, prepared statements) before measuring.
  await rawJetStream(nats.url, 300);
  await outbox(eventsDb.url, nats, 300);
  const raw = await rawJetStream(nats.url, N);
  const box = await outbox(eventsDb.url, nats, N);
  const ceiling = await postgresCeiling(eventsDb.url, N);
  const rawOne = await rawJetStream(nats.url, 300, 1);
  const boxOne = await outbox(eventsDb.url, nats, 300, 1);
  const cpuTotal = (w: Work, nodeUs: number) => nodeUs + w.postgresUs + w.natsUs;
  const fmtWork = (w: Work, nodeUs: number) =>
    `${w.statements.toFixed(2)} statements (${w.transactions.toFixed(2)} transactions); CPU µs: this process ${nodeUs.toFixed(0)}, PostgreSQL backends ${w.postgresUs.toFixed(0)}, nats-server ${w.natsUs.toFixed(0)}, total ${cpuTotal(w, nodeUs).toFixed(0)}`;
  const fmt = (r: Result) =>
    `${r.perSecond.toFixed(0).padStart(6)} events/s   p50 ${r.p50.toFixed(1).padStart(6)} ms   p99 ${r.p99.toFixed(1).padStart(6)} ms   lost ${r.lost}   duplicated ${r.duplicated}   CPU ${r.cpuUs.toFixed(0)} µs/event`;
  process.stdout.write(
    [
      `bench:events  ${N} events per mode, ${INFLIGHT} producers in flight, ${CONCURRENCY} handlers in flight`,
      `  raw JetStream publish → consume (baseline)  ${fmt(raw)}`,
      `  outbox commit → relay → consumer tx         ${fmt(box)}`,
      `  outbox / raw: throughput ${(box.perSecond / raw.perSecond).toFixed(2)}x (goal ≥ 0.50), p50 latency ${(box.p50 / raw.p50).toFixed(1)}x, p99 latency ${(box.p99 / raw.p99).toFixed(1)}x`,
      `  reference: bare PostgreSQL transactions (BEGIN, INSERT, COMMIT), same producers: ${ceiling.perSecond.toFixed(0)} tx/s, CPU ${ceiling.cpuUs.toFixed(0)} µs/tx; outbox / that: ${(box.perSecond / ceiling.perSecond).toFixed(2)}x (goal ≥ 0.80), CPU ${(box.cpuUs / ceiling.cpuUs).toFixed(1)}x`,
      `    the outbox's producers meanwhile committed ${box.committedPerSecond.toFixed(0)} tx/s (${(box.committedPerSecond / ceiling.perSecond).toFixed(2)}x bare), beside the relay and the consumer's transactions`,
      `    work per event: outbox ${fmtWork(box.work, box.cpuUs)}`,
      `                    bare   ${fmtWork(ceiling.work, ceiling.cpuUs)}`,
      `    with every core busy, throughput goes as CPU per event: outbox / bare at most ${(cpuTotal(ceiling.work, ceiling.cpuUs) / cpuTotal(box.work, box.cpuUs)).toFixed(2)}x`,
      `  one at a time (latency without queueing, 300 events; the first ${WARMUP} of every run warm up and are left out of latencies):`,
      `    raw JetStream                             ${fmt(rawOne)}`,
      `    outbox                                    ${fmt(boxOne)}`,
      `    outbox / raw p50 latency ${(boxOne.p50 / rawOne.p50).toFixed(1)}x, p99 ${(boxOne.p99 / rawOne.p99).toFixed(1)}x`,
      `  npm run migrate on an empty database: ${m.emptyMs.toFixed(0)} ms wall (${m.emptyScriptMs} ms inside the script); with nothing to apply: ${m.noopMs.toFixed(0)} ms wall`,
      "",
    ].join("\n"),
  );
  if (box.lost !== 0 || box.duplicated !== 0 || raw.lost !== 0) process.exitCode = 1;
} finally {
  await migrateDb.drop();
  await eventsDb.drop();
  await nats.kill();
}
