/**
 * bench/soak: one gateway instance (`npm start` with SERVICES=gateway) under
 * steady traffic for minutes, to see what grows: hundreds of open
 * NotificationService.Subscribe streams (half over gRPC/h2c, half over
 * Connect/HTTP 1.1), hundreds of device sockets answering tool calls, and a
 * steady rate of Publish and CallTool from a service.
 *
 * Prints the instance's samples (RSS, heap, live heap after forced GCs, fds,
 * event-loop delay), the RSS and live-heap slopes over the minutes after the
 * first (warm-up), CallTool and Publish p50/p99 per minute with the last
 * minute's p99 as a ratio of the first's (the baseline of the same run), and
 * whether every notification reached every stream exactly once, in order.
 *
 *   npm run bench:soak [-- --minutes 3 --users 200 --streams 800 --devices 200 --publish 100 --calls 100 --sample 10]
 */
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { DeviceService } from "../../gen/switchyard/device/v1/device_pb.js";
import { NotificationService } from "../../gen/switchyard/notify/v1/notify_pb.js";
import { connectDevice, dropPrefix, startTestKeys, type TestDevice } from "../../test/gateway/support.js";
import { natsUrl } from "../../test/support/infra.js";
import { spawnPlatform } from "../../test/support/spawn.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "3" },
    users: { type: "string", default: "200" },
    streams: { type: "string", default: "800" },
    devices: { type: "string", default: "200" },
    publish: { type: "string", default: "100" },
    calls: { type: "string", default: "100" },
    sample: { type: "string", default: "10" },
  },
});
const minutes = Number(values.minutes);
const users = Number(values.users);
const streamCount = Number(values.streams);
const deviceCount = Math.min(Number(values.devices), users);
const publishRate = Number(values.publish);
const callRate = Number(values.calls);
const sampleMs = Number(values.sample) * 1000;
const MAX_IN_FLIGHT = 2000;

const keys = await startTestKeys();
const nats = await natsUrl();
const prefix = `soak${randomBytes(3).toString("hex")}`;
const ttlS = minutes * 60 + 600;
const instance = await spawnPlatform({
  script: "bench/soak/instance.ts",
  nodeArgs: ["--expose-gc"],
  stdout: "ignore",
  env: {
    SERVICES: "gateway",
    HOST: "127.0.0.1",
    LOG_LEVEL: "warn",
    NATS_URL: nats,
    AUTH_JWKS_URL: keys.jwksUrl,
    GATEWAY_NATS_PREFIX: prefix,
    GATEWAY_MAX_PENDING_CALLS_PER_USER: "1024",
    SOAK_SAMPLE_MS: String(sampleMs),
  },
});
process.once("exit", () => instance.child.kill("SIGKILL"));

const userIds = Array.from({ length: users }, (_, i) => `soak-${prefix}-${i}`);
const tokens = await Promise.all(userIds.map((u) => keys.mint(u, { ttlS })));
const serviceToken = await keys.mint("soak-agent", { roles: ["service"], ttlS });
const withToken = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

// Transports: gRPC shares an h2 session per transport (at most 100 streams each); Connect opens a connection a stream.
const grpcTransports: Transport[] = [];
const transportFor = (i: number): Transport => {
  if (i % 2 === 1) return createConnectTransport({ baseUrl: instance.baseUrl, httpVersion: "1.1" });
  const k = Math.floor(i / 2 / 100);
  return (grpcTransports[k] ??= createGrpcTransport({ baseUrl: instance.baseUrl }));
};
// The service's calls over several h2 sessions: one session allows only so many concurrent streams.
const agents = Array.from({ length: 8 }, () => {
  const t = createGrpcTransport({ baseUrl: instance.baseUrl });
  return { devices: createClient(DeviceService, t), notify: createClient(NotificationService, t) };
});
const agentFor = (n: number) => agents[n % agents.length]!;

/** One Subscribe stream: how many notifications it got, and breaks in their sequence chain. */
interface StreamState {
  user: number;
  received: number;
  last: bigint;
  gaps: number;
  duplicates: number;
  failed?: string;
  /** Whether anything (the end-of-replay heartbeat at least) arrived. */
  open?: boolean;
}
let opened = 0;
const stop = new AbortController();
const streams: StreamState[] = [];
const streamDone: Promise<void>[] = [];
for (let i = 0; i < streamCount; i++) {
  const s: StreamState = { user: i % users, received: 0, last: -1n, gaps: 0, duplicates: 0 };
  streams.push(s);
  const client: Client<typeof NotificationService> = createClient(NotificationService, transportFor(i));
  streamDone.push(
    (async () => {
      try {
        for await (const m of client.subscribe({ afterSequence: 0n }, { ...withToken(tokens[s.user]!), signal: stop.signal })) {
          if (!s.open) {
            s.open = true;
            opened++;
          }
          if (m.event.case !== "notification") continue;
          const n = m.event.value;
          if (s.last >= 0n && n.sequence <= s.last) s.duplicates++;
          else if (s.last >= 0n && n.previousSequence !== s.last) s.gaps++;
          s.last = n.sequence;
          s.received++;
        }
      } catch (err) {
        if (!stop.signal.aborted) s.failed = String(err);
      }
    })(),
  );
}

const devices: TestDevice[] = [];
for (let i = 0; i < deviceCount; i += 50) {
  devices.push(
    ...(await Promise.all(
      Array.from({ length: Math.min(50, deviceCount - i) }, (_, j) =>
        connectDevice(instance.port, { token: tokens[i + j]!, deviceId: `soak-${i + j}`, onCall: (call) => ({ ok: call.callId }) }),
      ),
    )),
  );
}
// Device frames are not needed here: drop them so this process stays small.
for (const d of devices) d.ws.on("message", () => void (d.frames.length = 0));

const openUntil = Date.now() + 120_000;
while (opened < streamCount && Date.now() < openUntil) await new Promise((r) => setTimeout(r, 100));
if (opened < streamCount) throw new Error(`only ${opened} of ${streamCount} Subscribe streams opened within 120 s`);

/** Latencies (ms) and outcomes per minute of the run. */
interface Minute {
  call: number[];
  publish: number[];
  callErrors: number;
  publishErrors: number;
}
const perMinute: Minute[] = [];
const t0 = performance.now();
const minuteOf = () => (perMinute[Math.floor((performance.now() - t0) / 60_000)] ??= { call: [], publish: [], callErrors: 0, publishErrors: 0 });
let inFlight = 0;
let skipped = 0;
let published = 0;
const publishedTo = new Array<number>(users).fill(0);
const errorKinds = new Map<string, number>();
const noteError = (err: unknown) => errorKinds.set(String(err).slice(0, 120), (errorKinds.get(String(err).slice(0, 120)) ?? 0) + 1);

function paced(rate: number, fire: (n: number) => Promise<unknown>, record: (ms: number, ok: boolean) => void): NodeJS.Timeout {
  let n = 0;
  const start = performance.now();
  // Open loop: each tick sends what the rate owes by now, without waiting for answers.
  return setInterval(() => {
    const owed = Math.floor(((performance.now() - start) / 1000) * rate);
    for (; n < owed; n++) {
      if (inFlight >= MAX_IN_FLIGHT) {
        skipped++;
        continue;
      }
      inFlight++;
      const began = performance.now();
      fire(n).then(
        () => record(performance.now() - began, true),
        (err: unknown) => {
          noteError(err);
          record(performance.now() - began, false);
        },
      ).finally(() => inFlight--);
    }
  }, 10);
}

console.log(
  `bench/soak: one gateway instance, ${users} users, ${streamCount} Subscribe streams, ${devices.length} device sockets, ` +
    `${publishRate} Publish/s and ${callRate} CallTool/s for ${minutes} min (samples every ${sampleMs / 1000} s)\n`,
);
const timers = [
  paced(
    callRate,
    (n) => agentFor(n).devices.callTool({ userId: userIds[n % devices.length]!, tool: "echo", arguments: { n } }, { ...withToken(serviceToken), timeoutMs: 10_000 }),
    (ms, ok) => (ok ? minuteOf().call.push(ms) : minuteOf().callErrors++),
  ),
  paced(
    publishRate,
    (n) =>
      agentFor(n).notify
        .publish({ userId: userIds[n % users]!, title: `soak ${n}`, body: "x".repeat(64), kind: "soak.tick" }, { ...withToken(serviceToken), timeoutMs: 10_000 })
        .then(() => {
          published++;
          publishedTo[n % users]!++;
        }),
    (ms, ok) => (ok ? minuteOf().publish.push(ms) : minuteOf().publishErrors++),
  ),
];

await new Promise((r) => setTimeout(r, minutes * 60_000));
for (const t of timers) clearInterval(t);
const endedAt = performance.now();
// Drain: the answers still in flight, then the deliveries, until their count stops moving.
const drainUntil = Date.now() + 20_000;
while (inFlight > 0 && Date.now() < drainUntil) await new Promise((r) => setTimeout(r, 100));
let lastSum = -1;
while (Date.now() < drainUntil) {
  const sum = streams.reduce((a, s) => a + s.received, 0);
  if (sum === lastSum) break;
  lastSum = sum;
  await new Promise((r) => setTimeout(r, 1000));
}
// Every successful Publish to a user reaches each of that user's streams once.
const streamsOfUser = new Array<number>(users).fill(0);
for (const s of streams) streamsOfUser[s.user]!++;
const expectedDeliveries = publishedTo.reduce((a, n, u) => a + n * streamsOfUser[u]!, 0);

stop.abort();
await Promise.allSettled(streamDone);
for (const d of devices) d.ws.terminate();
await instance.stop("SIGKILL");
await dropPrefix(nats, prefix);
await keys.close();

// ---- report
type Sample = { at: number; rss: number; heapUsed: number; liveHeap: number; fds: number; lagP99: number; lagMax: number };
const samples: Sample[] = [...instance.output().matchAll(/^SOAK (\{.*\})$/gm)].map((m) => JSON.parse(m[1]!) as Sample);
const MiB = (b: number) => (b / 1048576).toFixed(1);
const firstAt = samples[0]?.at ?? 0;
console.log("   t s   RSS MiB   heap MiB   live heap MiB   fds   loop delay p99 / max ms");
for (const s of samples) {
  console.log(
    `${((s.at - firstAt) / 1000).toFixed(0).padStart(6)} ${MiB(s.rss).padStart(9)} ${MiB(s.heapUsed).padStart(10)} ${MiB(s.liveHeap).padStart(15)} ${String(s.fds).padStart(5)}   ${s.lagP99.toFixed(1).padStart(7)} / ${s.lagMax.toFixed(1)}`,
  );
}
/** Least-squares slope of `pick` over samples after the first minute, in MiB per minute. */
const slope = (pick: (s: Sample) => number) => {
  const xs = samples.filter((s) => s.at - firstAt >= 60_000);
  if (xs.length < 2) return NaN;
  const mx = xs.reduce((a, s) => a + s.at, 0) / xs.length;
  const my = xs.reduce((a, s) => a + pick(s), 0) / xs.length;
  const num = xs.reduce((a, s) => a + (s.at - mx) * (pick(s) - my), 0);
  const den = xs.reduce((a, s) => a + (s.at - mx) ** 2, 0);
  return (num / den) * 60_000 / 1048576;
};
console.log(`\nslopes after the first minute: live heap ${slope((s) => s.liveHeap).toFixed(3)} MiB/min, RSS ${slope((s) => s.rss).toFixed(3)} MiB/min (goal: live heap well under 1 MiB/min)`);

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};
console.log("\nminute   CallTool n   p50 ms   p99 ms   errors   Publish n   p50 ms   p99 ms   errors");
const full = perMinute.filter((_, i) => (i + 1) * 60_000 <= endedAt - t0 + 1000);
for (const [i, m] of perMinute.entries()) {
  console.log(
    `${String(i + 1).padStart(6)} ${String(m.call.length).padStart(12)} ${pct(m.call, 50).toFixed(1).padStart(8)} ${pct(m.call, 99).toFixed(1).padStart(8)} ${String(m.callErrors).padStart(8)} ${String(m.publish.length).padStart(11)} ${pct(m.publish, 50).toFixed(1).padStart(8)} ${pct(m.publish, 99).toFixed(1).padStart(8)} ${String(m.publishErrors).padStart(8)}`,
  );
}
if (full.length >= 2) {
  const [first, last] = [full[0]!, full.at(-1)!];
  console.log(
    `\np99 last minute / first minute (the run's own baseline): CallTool ${(pct(last.call, 99) / pct(first.call, 99)).toFixed(2)}x, Publish ${(pct(last.publish, 99) / pct(first.publish, 99)).toFixed(2)}x (goal: within 2x)`,
  );
}
const received = streams.reduce((a, s) => a + s.received, 0);
const gaps = streams.reduce((a, s) => a + s.gaps, 0);
const duplicates = streams.reduce((a, s) => a + s.duplicates, 0);
const failedStreams = streams.filter((s) => s.failed !== undefined);
console.log(
  `\ndeliveries: ${received} on ${streamCount} streams for ${published} successful Publish (expected ${expectedDeliveries}); ` +
    `out of order or duplicated ${duplicates}, sequence gaps ${gaps}, streams that failed ${failedStreams.length}; calls skipped at the in-flight cap ${skipped}`,
);
for (const [e, n] of errorKinds) console.log(`  error x${n}: ${e}`);
for (const s of failedStreams.slice(0, 3)) console.log(`  stream failure: ${s.failed}`);
process.exit(0);
