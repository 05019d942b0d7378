/**
 * `npm run bench:cluster`: the cost of replication. The same measurements on
 * one nats-server (streams R1) and on a 3-node loopback cluster (streams R3,
 * NATS_REPLICAS=3), in the same run, side by side with the ratio:
 *
 * - raw JetStream publish with ack, 64 in flight (the bus's own ceiling);
 * - events through the outbox (commit → relay → JetStream → durable
 *   consumer's transaction), 64 producers in flight, nothing lost or doubled;
 * - bench/toolcall's JetStream tool-call path (its "Switchyard" row, with the
 *   floor row beside it), run as a child against each, briefly.
 *
 * All three nodes share this machine's two cores, so the cluster pays three
 * servers' CPU on the same cores: a lower bound of what separate machines give.
 *
 *   npm run bench:cluster [-- --events 2000 --calls1 300 --calls64 3000]
 */
import { create } from "@bufbuild/protobuf";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { UserLoggedInSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { createDatabase } from "../../platform/db/database.js";
import { migrate } from "../../platform/db/migrate.js";
import { createEventBus } from "../../platform/events/events.js";
import { createLogger } from "../../platform/log.js";
import { connectNats } from "../../platform/nats/connection.js";
import { createStreamDeclarer } from "../../platform/nats/declare.js";
import { createTestDatabase, startNats } from "../../test/support/infra.js";
import { startNatsCluster } from "../../test/support/nats-cluster.js";

const { values } = parseArgs({
  options: { events: { type: "string", default: "2000" }, calls1: { type: "string", default: "300" }, calls64: { type: "string", default: "3000" } },
});
const N = Number(values.events);
const INFLIGHT = 64;
const log = createLogger("silent");

interface Rate {
  readonly perSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly lost?: number;
  readonly duplicated?: number;
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

async function produce(count: number, one: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: INFLIGHT }, async () => {
    while (next < count) await one(next++);
  }));
}

/** JetStream publish with ack, INFLIGHT at a time, on a stream of `replicas`. */
async function rawPublish(url: string, replicas: number): Promise<Rate> {
  const nc = await connectNats(url, log);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await jsm.streams.add({ name: "BENCH_CLUSTER_RAW", subjects: ["bench.cluster.raw"], num_replicas: replicas });
  const latencies: number[] = [];
  const start = performance.now();
  await produce(N, async (i) => {
    const t = performance.now();
    await js.publish("bench.cluster.raw", String(i), { msgID: `raw-${i}` });
    latencies.push(performance.now() - t);
  });
  const perSecond = (N / (performance.now() - start)) * 1000;
  await jsm.streams.delete("BENCH_CLUSTER_RAW");
  await nc.close();
  latencies.sort((a, b) => a - b);
  return { perSecond, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99) };
}

/** Events through the outbox into a durable consumer's transaction, EVENTS at `replicas`. */
async function outbox(dbUrl: string, url: string, replicas: number): Promise<Rate> {
  const db = createDatabase(dbUrl, { max: 32 });
  await migrate(db.sql, []);
  await db.sql`create table if not exists public.bench_effects (user_id text not null)`;
  await db.sql`truncate public.bench_effects`;
  const nc = await connectNats(url, log);
  const streams = createStreamDeclarer(nc, { replicas, log, budgetMs: 30_000 });
  const bus = await createEventBus({ db, nc, log, streams });
  const committedAt = new Map<string, number>();
  const latencies: number[] = [];
  const handled = new Set<string>();
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const stop = await bus.consume({
    schema: UserLoggedInSchema,
    durable: `bench_r${replicas}`,
    concurrency: 32,
    handle: async (event, _meta, tx) => {
      await tx`insert into public.bench_effects (user_id) values (${event.userId})`;
      const t = committedAt.get(event.userId);
      if (t !== undefined && !handled.has(event.userId)) latencies.push(performance.now() - t);
      handled.add(event.userId);
      if (handled.size === N) setImmediate(done);
    },
  });
  const tag = `r${replicas}-${Date.now()}`;
  const start = performance.now();
  await produce(N, async (i) => {
    await db.tx((tx) => bus.publish(tx, UserLoggedInSchema, create(UserLoggedInSchema, { userId: `${tag}-${i}` })));
    committedAt.set(`${tag}-${i}`, performance.now());
  });
  await finished;
  const perSecond = (N / (performance.now() - start)) * 1000;
  await stop();
  let effects = 0;
  let distinct = 0;
  for (let tries = 0; tries < 100 && distinct < N; tries++) {
    const [r] = await db.sql<{ effects: number; distinct: number }[]>`select count(*)::int as effects, count(distinct user_id)::int as distinct from public.bench_effects`;
    ({ effects, distinct } = r!);
    if (distinct < N) await new Promise((res) => setTimeout(res, 50));
  }
  await bus.stop();
  streams.stop();
  await nc.close();
  await db.close();
  latencies.sort((a, b) => a - b);
  return { perSecond, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), lost: N - distinct, duplicated: effects - distinct };
}

/** bench/toolcall against `url`, its rows by label. */
async function toolcall(url: string, replicas: number): Promise<string[]> {
  const child = spawn(process.execPath, ["--import", "tsx", "bench/toolcall/run.ts", "--only", "floor,switchyard", "--calls1", values.calls1!, "--calls64", values.calls64!, "--sockets", "100"], {
    env: { ...process.env, NATS_URL: url, NATS_REPLICAS: String(replicas), SPAWN_READY_TIMEOUT_MS: process.env.SPAWN_READY_TIMEOUT_MS ?? "120000" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.once("exit", r));
  if (code !== 0) throw new Error(`bench/toolcall failed (${code}):\n${out}`);
  return out.split("\n").filter((l) => /^(floor|Switchyard)/.test(l));
}

const single = await startNats();
const cluster = await startNatsCluster(3);
const dbOne = await createTestDatabase("sy_bench_cluster");
const dbThree = await createTestDatabase("sy_bench_cluster");
try {
  await rawPublish(single.url, 1); // warm up
  const raw1 = await rawPublish(single.url, 1);
  const raw3 = await rawPublish(cluster.nodes[0]!.url, 3);
  await outbox(dbOne.url, single.url, 1); // warm up (consumer, pool, JIT)
  const box1 = await outbox(dbOne.url, single.url, 1);
  const box3 = await outbox(dbThree.url, cluster.url, 3);
  const f = (r: Rate) =>
    `${r.perSecond.toFixed(0).padStart(6)}/s  p50 ${r.p50.toFixed(2).padStart(7)} ms  p99 ${r.p99.toFixed(2).padStart(7)} ms${r.lost === undefined ? "" : `  lost ${r.lost} duplicated ${r.duplicated}`}`;
  const ratio = (three: Rate, one: Rate) => `R3/R1: throughput ${(three.perSecond / one.perSecond).toFixed(2)}x, p50 ${(three.p50 / one.p50).toFixed(2)}x, p99 ${(three.p99 / one.p99).toFixed(2)}x`;
  console.log(
    [
      `bench:cluster  one nats-server (R1) beside a 3-node loopback cluster (R3), ${N} per mode, ${INFLIGHT} in flight, one 2-core machine`,
      `  JetStream publish+ack   R1 ${f(raw1)}`,
      `                          R3 ${f(raw3)}`,
      `                          ${ratio(raw3, raw1)}`,
      `  outbox → consumer tx    R1 ${f(box1)}`,
      `                          R3 ${f(box3)}`,
      `                          ${ratio(box3, box1)}`,
    ].join("\n"),
  );
  console.log(`  bench/toolcall (${values.calls1} calls at 1 in flight, ${values.calls64} at 64):`);
  for (const [label, url, replicas] of [["single node, R1", single.url, 1], ["3-node cluster, R3", cluster.nodes[0]!.url, 3]] as const) {
    try {
      const rows = await toolcall(url, replicas);
      console.log([`    ${label}:`, ...rows.map((l) => `      ${l}`)].join("\n"));
    } catch (err) {
      console.log(`    ${label}: failed: ${String(err).split("\n")[0]}`);
      process.exitCode = 1;
    }
  }
  if (box1.lost || box1.duplicated || box3.lost || box3.duplicated) process.exitCode = 1;
} finally {
  await cluster.stop();
  await single.kill();
  await dbOne.drop();
  await dbThree.drop();
}
process.exit(process.exitCode ?? 0);
