/**
 * The caller process of bench/toolcall. Runs each design at 1 and 64 calls in
 * flight and prints one JSON line of results per design:
 *
 * - floor:   NATS request/reply to the relay process, which echoes over ws
 *            through the device process (the least a NATS + WebSocket path costs);
 * - switchyard: the gateway's own caller code (presence cache, JetStream
 *            publish with Nats-Msg-Id, one result subject) in this process,
 *            to the gateway process holding the device's WebSocket;
 * - origin:  the origin design: HGET of the user-to-instance hash, SUBSCRIBE
 *            tool_result:{id}, PUBLISH tool_call:{user}, wait, UNSUBSCRIBE;
 * - rpc:     CallTool over gRPC to a second gateway process (caller → gateway A
 *            → JetStream → gateway B → device), with connect-node's client;
 * - rpc-platform: the same RPC with the platform's service client
 *            (platform/client.ts), what a service calls;
 * - grpc-unary: a grpc-js client calling a bare grpc-js echo server in
 *            another process (bench/unary/servers.ts): the least an RPC costs.
 *
 *   BENCH_SERVICE_TOKEN=<token> node --import tsx bench/toolcall/caller.ts <json config>
 */
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { connect } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import { randomBytes } from "node:crypto";
import { DeviceService } from "../../gen/switchyard/device/v1/device_pb.js";
import { createGatewayBeats } from "../../gateway/beats.js";
import { randomBase64url } from "../../platform/random.js";
import { createToolCaller } from "../../gateway/calls.js";
import { structBytes } from "../../gateway/codec.js";
import { ensureGatewayStore } from "../../gateway/nats-setup.js";
import { createPresenceCache } from "../../gateway/presence-cache.js";
import { gatewayNames } from "../../gateway/subjects.js";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { UnaryCallRequestSchema, UnaryCallResponseSchema } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createServiceClient, createServiceTransport } from "../../platform/client.js";
import { createLogger } from "../../platform/log.js";
import { processCpuMs } from "../cpu.js";

interface Config {
  natsUrl: string;
  prefix: string;
  userId: string;
  rpcPort: number;
  /** Port of a bare grpc-js UnaryCall echo server. */
  grpcUnaryPort: number;
  calls1: number;
  calls64: number;
  /** Designs to run (all when empty). */
  only: string[];
  /** Processes whose CPU time per call is reported (name → pid). */
  pids: Record<string, number>;
}
const cfg = JSON.parse(process.argv[2]!) as Config;
const args = { text: "hello from the agent", n: 1 };
const argsBytes = structBytes(args);
const rawPayload = Buffer.from(JSON.stringify({ tool: "echo", arguments: args }));

type Call = () => Promise<unknown>;

/** Runs `n` calls with `inflight` workers; latencies in ms, calls per second, CPU µs per call of each process. */
async function measure(call: Call, inflight: number, n: number) {
  for (let i = 0; i < Math.min(500, n / 4); i++) await call(); // warm up
  const lat: number[] = [];
  let left = n;
  const pids = { caller: process.pid, ...cfg.pids };
  const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuMs(pid)]));
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (left-- > 0) {
        const s = performance.now();
        await call();
        lat.push(performance.now() - s);
      }
    }),
  );
  const wall = performance.now() - t0;
  const cpuUsPerCall = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, ((processCpuMs(pid) - cpu0[k]!) * 1000) / n]));
  lat.sort((a, b) => a - b);
  return { inflight, n, p50: lat[Math.floor(lat.length * 0.5)]!, p99: lat[Math.floor(lat.length * 0.99)]!, cps: (n / wall) * 1000, cpuUsPerCall };
}

async function run(name: string, call: Call) {
  if (cfg.only.length > 0 && !cfg.only.includes(name)) return;
  const rows = [await measure(call, 1, cfg.calls1), await measure(call, 64, cfg.calls64)];
  process.stdout.write(`${JSON.stringify({ name, rows })}\n`);
}

const log = createLogger("silent");
const nc = await connect({ servers: cfg.natsUrl });

// floor
await run("floor", () => nc.request("bench.floor.x", rawPayload, { timeout: 5000 }));

// switchyard: the gateway's caller, in process
{
  const names = gatewayNames(cfg.prefix);
  const store = await ensureGatewayStore(nc, names, { notifyKeepPerUser: 10_000 });
  const instanceId = `bench-caller-${randomBytes(3).toString("hex")}`;
  const beats = createGatewayBeats({ nc, kv: store.gateways, names, instanceId, intervalMs: 10_000, log });
  await beats.start();
  const cache = createPresenceCache(nc, store.devices, names);
  const caller = createToolCaller({ nc, jsm: store.jsm, names, instanceId, cache, beats, maxPendingPerUser: 1024, log });
  await run("switchyard", async () => {
    // Ids as the gateway makes them (pooled CSPRNG), so the baseline pays what CallTool pays.
    const cid = randomBase64url(16);
    const o = await caller.call({
      callId: cid,
      userId: cfg.userId,
      requestedDeviceId: "",
      tool: "echo",
      argsBytes,
      deadline: Date.now() + 10_000,
      waitForDevice: false,
    });
    if (o.toolResult === undefined) throw new Error("no tool result");
  });
  // "No device online": how soon the caller knows, for a user seen before
  // (presence cached) and for a user never called from this instance (one KV read).
  if (cfg.only.length === 0 || cfg.only.includes("switchyard")) {
    const offline = async (userId: string) => {
      const t = performance.now();
      await caller
        .call({ callId: randomBytes(12).toString("base64url"), userId, requestedDeviceId: "", tool: "echo", argsBytes, deadline: Date.now() + 10_000, waitForDevice: false })
        .then(() => Promise.reject(new Error("an offline user answered")), (e: unknown) => (String(e).includes("no device") ? undefined : Promise.reject(e)));
      return performance.now() - t;
    };
    const p50 = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const cached: number[] = [];
    const fresh: number[] = [];
    for (let i = 0; i < 1000; i++) cached.push(await offline("offline-user"));
    for (let i = 0; i < 500; i++) fresh.push(await offline(`offline-${i}-${randomBytes(3).toString("hex")}`));
    process.stdout.write(`${JSON.stringify({ name: "offline", cachedP50: p50(cached), freshP50: p50(fresh) })}\n`);
  }
  caller.stop();
  await beats.stop();
}

// origin: Redis pub/sub + user-to-instance hash, as the origin's RedisDeviceManager did it
{
  const cmd = new Redis({ host: "127.0.0.1", port: 6379 });
  const sub = new Redis({ host: "127.0.0.1", port: 6379 });
  const waiting = new Map<string, () => void>();
  sub.on("messageBuffer", (channel: Buffer) => {
    const id = channel.toString().slice("tool_result:".length);
    waiting.get(id)?.();
  });
  await run("origin", async () => {
    const id = randomBase64url(16);
    const instance = await cmd.hget("ws:connections", "bench-user");
    if (instance === null) throw new Error("user not online");
    const done = new Promise<void>((resolve) => waiting.set(id, resolve));
    await sub.subscribe(`tool_result:${id}`);
    await cmd.publish("tool_call:bench-user", JSON.stringify({ id, tool: "echo", arguments: args }));
    await done;
    waiting.delete(id);
    await sub.unsubscribe(`tool_result:${id}`);
  });
  cmd.disconnect();
  sub.disconnect();
}

// rpc: CallTool through a second gateway process
{
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${process.env.BENCH_SERVICE_TOKEN}`);
    return next(req);
  };
  const client = createClient(DeviceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${cfg.rpcPort}`, interceptors: [auth] }));
  await run("rpc", () => client.callTool({ userId: cfg.userId, tool: "echo", arguments: args }));
  const platformClient = createServiceClient(DeviceService, createServiceTransport(`http://127.0.0.1:${cfg.rpcPort}`, [auth]));
  await run("rpc-platform", () => platformClient.callTool({ userId: cfg.userId, tool: "echo", arguments: args }));
}

// grpc-unary: bare grpc-js client → bare grpc-js server
{
  const client = new grpc.Client(`127.0.0.1:${cfg.grpcUnaryPort}`, grpc.credentials.createInsecure());
  const request = create(UnaryCallRequestSchema, { text: "hello from the agent" });
  const ser = (v: typeof request) => Buffer.from(toBinary(UnaryCallRequestSchema, v));
  const de = (b: Buffer) => b;
  void UnaryCallResponseSchema;
  await run(
    "grpc-unary",
    () =>
      new Promise<void>((resolve, reject) =>
        client.makeUnaryRequest("/switchyard.testing.v1.TestingService/UnaryCall", ser, de, request, (err) => (err ? reject(err) : resolve())),
      ),
  );
  client.close();
}

await nc.close();
process.exit(0);
