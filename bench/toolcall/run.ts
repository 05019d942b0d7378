/**
 * bench/toolcall: the cross-instance tool-call round trip (caller process →
 * bus → process holding the WebSocket → device process → back), every piece
 * in its own process, at 1 and 64 calls in flight, for:
 *
 * - the floor: NATS request/reply + a ws echo (relay.ts), same topology;
 * - Switchyard: the gateway's caller code → JetStream → a gateway process
 *   (SERVICES=gateway) → the device;
 * - the origin design: Redis pub/sub + the user-to-instance hash;
 * - CallTool over gRPC through a second gateway process, with connect-node's
 *   client and with the platform's service client (what services call),
 *   beside a bare grpc-js unary call (grpc-js client → bare grpc-js server).
 *
 * Then the memory of idle device sockets: 10k connections (hello sent) on one
 * gateway, heap and RSS before and after (after a forced GC).
 *
 *   npm run bench:toolcall [-- --calls1 2000 --calls64 20000 --sockets 10000]
 */
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { execSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { dropPrefix } from "../../test/gateway/support.js";
import { natsUrl } from "../../test/support/infra.js";
import { spawnPlatform, spawnScript, type PlatformProcess, type ScriptProcess } from "../../test/support/spawn.js";

const { values } = parseArgs({
  options: { calls1: { type: "string", default: "2000" }, calls64: { type: "string", default: "20000" }, sockets: { type: "string", default: "10000" }, only: { type: "string", default: "" } },
});
const started = Date.now();
const children: ChildProcess[] = [];
process.once("exit", () => children.forEach((c) => c.kill("SIGKILL")));

// A signing key the gateways trust through AUTH_JWKS_URL.
const kid = `bench${randomBytes(3).toString("hex")}`;
const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" }] };
const jwksServer = http.createServer((_req, res) => res.end(JSON.stringify(jwks)));
await new Promise<void>((r) => jwksServer.listen(0, "127.0.0.1", r));
const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks.json`;
const mint = (sub: string, roles: string[] = []) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ tier: "pro", roles }).setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" }).setIssuer("switchyard-auth").setAudience("switchyard").setSubject(sub).setIssuedAt(now).setExpirationTime(now + 900).sign(privateKey);
};

const nats = await natsUrl();
const prefix = `bench${randomBytes(3).toString("hex")}`;
const gatewayEnv = {
  NATS_URL: nats,
  AUTH_JWKS_URL: jwksUrl,
  GATEWAY_NATS_PREFIX: prefix,
  GATEWAY_MAX_PENDING_CALLS_PER_USER: "1024",
  LOG_LEVEL: "warn",
  SERVICES: "gateway",
  HOST: "127.0.0.1",
};

/** spawnScript, and the child is killed when this process exits. */
async function start(script: string, args: string[], env: Record<string, string>, ready: RegExp): Promise<ScriptProcess> {
  const p = await spawnScript(script, { args, env, ready });
  children.push(p.child);
  return p;
}

async function startGateway(nodeArgs: string[] = [], script = "app/main.ts"): Promise<PlatformProcess> {
  const p = await spawnPlatform({ env: gatewayEnv, nodeArgs, script, stdout: "ignore", timeoutMs: 90_000 }); // a loaded machine starts slowly
  children.push(p.child);
  return p;
}

interface Row {
  inflight: number;
  n: number;
  p50: number;
  p99: number;
  cps: number;
  cpuUsPerCall: Record<string, number>;
}
const results = new Map<string, Row[]>();
let offline: { cached: number; fresh: number } | undefined;
let base: NodeJS.MemoryUsage;
let loaded: NodeJS.MemoryUsage;
let openMs: number;
const sockets = Number(values.sockets);
try {
  const tsx = ["--import", "tsx"];
  const user = "bench-user";
  const [holder, front, floorRelay, redisRelay, grpcUnary] = await Promise.all([
    startGateway(),
    startGateway(),
    start("bench/toolcall/relay.ts", ["nats", nats], {}, /port (\d+)/),
    start("bench/toolcall/relay.ts", ["redis", nats], {}, /port (\d+)/),
    start("bench/unary/servers.ts", ["grpc-js"], {}, /port (\d+)/),
  ]);
  const device = await start("bench/toolcall/device.ts", [String(holder.port), floorRelay.match[1]!, redisRelay.match[1]!], { BENCH_DEVICE_TOKEN: await mint(user) }, /ready/);

  {
    const natsPort = new URL(nats).port || "4222";
    const natsPid = Number(/:(\d+)\s.*pid=(\d+)/.exec(execSync("ss -ltnpH").toString().split("\n").find((l) => l.includes(`:${natsPort} `) && l.includes("nats-server")) ?? "")?.[2] ?? 0);
    const pids = { "nats-server": natsPid, holder: holder.child.pid!, device: device.child.pid!, "relay-nats": floorRelay.child.pid!, "relay-redis": redisRelay.child.pid!, "gateway A": front.child.pid!, "grpc-js server": grpcUnary.child.pid!, redis: Number(execSync("pgrep -x redis-server || true").toString().trim().split("\n")[0] || 0) };
    const config = { pids, natsUrl: nats, prefix, userId: user, rpcPort: front.port, grpcUnaryPort: grpcUnary.port, calls1: Number(values.calls1), calls64: Number(values.calls64), only: values.only ? values.only.split(",") : [] };
    const caller = spawn(process.execPath, [...tsx, "bench/toolcall/caller.ts", JSON.stringify(config)], {
      env: { ...process.env, BENCH_SERVICE_TOKEN: await mint("bench-agent", ["service"]) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.push(caller);
    let out = "";
    caller.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => caller.once("exit", r));
    if (code !== 0) throw new Error(`caller failed (${code}):\n${out}`);
    for (const line of out.trim().split("\n")) {
      const r = JSON.parse(line) as { name: string; rows: Row[]; cachedP50?: number; freshP50?: number };
      if (r.name === "offline") offline = { cached: r.cachedP50!, fresh: r.freshP50! };
      else results.set(r.name, r.rows);
    }
  }
  for (const c of [device.child, floorRelay.child, redisRelay.child, front.child, holder.child, grpcUnary.child]) c.kill("SIGKILL");

  // Memory of idle sockets on a fresh gateway.
  const probe = await startGateway(["--expose-gc"], "bench/toolcall/gateway-probe.ts");
  const readMem = async () => {
    const before = probe.output().length;
    probe.child.kill("SIGUSR2");
    for (let i = 0; i < 100; i++) {
      const m = /MEM (\{.*\})/.exec(probe.output().slice(before));
      if (m) return JSON.parse(m[1]!) as NodeJS.MemoryUsage;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("the gateway did not report its memory");
  };
  base = await readMem();
  const privateJwk = JSON.stringify(await exportJWK(privateKey));
  const t0 = Date.now();
  const holderOfSockets = await start("bench/toolcall/sockets.ts", [String(probe.port), String(sockets), kid], { BENCH_PRIVATE_JWK: privateJwk }, /ready (\d+)/);
  openMs = Date.now() - t0;
  await new Promise((r) => setTimeout(r, 1000)); // let the last presence writes and timers settle
  loaded = await readMem();
  holderOfSockets.child.kill("SIGKILL");
  probe.child.kill("SIGKILL");
} finally {
  for (const c of children) c.kill("SIGKILL");
  await dropPrefix(nats, prefix).catch(() => undefined);
  jwksServer.close();
}

// Report.
const f = (n: number, d = 3) => n.toFixed(d);
const floor = results.get("floor") ?? [{ inflight: 1, n: 0, p50: NaN, p99: NaN, cps: NaN }, { inflight: 64, n: 0, p50: NaN, p99: NaN, cps: NaN }];
const labels: Record<string, string> = {
  floor: "floor: NATS req/reply + ws echo",
  switchyard: "Switchyard: JetStream + gateway",
  origin: "origin: Redis pub/sub + hash",
  rpc: "CallTool RPC via gateway A",
  "rpc-platform": "CallTool, platform client, via A",
  "grpc-unary": "bare grpc-js unary (reference)",
};
console.log(`\nbench/toolcall: caller process → bus → process holding the device's WebSocket → device process → back`);
console.log(`(${values.calls1} calls at 1 in flight, ${values.calls64} at 64; nats-server ${nats}, redis 127.0.0.1:6379, one 2-core machine)\n`);
console.log(`${"design".padEnd(34)} in-flight   calls/s   p50 ms   p99 ms   p50/floor  calls/s/floor`);
for (const inflight of [1, 64]) {
  const fl = floor.find((r) => r.inflight === inflight)!;
  for (const [name, rows] of results) {
    const r = rows.find((x) => x.inflight === inflight)!;
    console.log(
      `${labels[name]!.padEnd(34)} ${String(inflight).padStart(9)} ${f(r.cps, 0).padStart(9)} ${f(r.p50).padStart(8)} ${f(r.p99).padStart(8)} ${f(r.p50 / fl.p50, 2).padStart(10)}x ${f(r.cps / fl.cps, 2).padStart(13)}x`,
    );
  }
}
console.log(`\nCPU time per call, µs (user+system, by process; 10 ms clock ticks, so rough at small counts):`);
for (const inflight of [1, 64]) {
  for (const [name, rows] of results) {
    const r = rows.find((x) => x.inflight === inflight)!;
    const parts = Object.entries(r.cpuUsPerCall).filter(([, v]) => v > 0.5).map(([k, v]) => `${k} ${f(v, 0)}`);
    const sum = Object.values(r.cpuUsPerCall).reduce((a, b) => a + b, 0);
    console.log(`  ${labels[name]!.padEnd(34)} ${String(inflight).padStart(2)}: total ${f(sum, 0)}: ${parts.join(", ")}`);
  }
}
const ours = results.get("switchyard") ?? floor;
const ours1 = ours.find((r) => r.inflight === 1)!;
const ours64 = ours.find((r) => r.inflight === 64)!;
const fl1 = floor.find((r) => r.inflight === 1)!;
console.log(`\ngoal: p50 at 1 in flight <= 1.5x floor: ${f(ours1.p50 / fl1.p50, 2)}x ${ours1.p50 <= 1.5 * fl1.p50 ? "(met)" : "(NOT met)"}`);
console.log(`goal: >= 8000 calls/s at 64 in flight: ${f(ours64.cps, 0)} ${ours64.cps >= 8000 ? "(met)" : "(NOT met)"}`);
const platformRpc = results.get("rpc-platform");
const unary = results.get("grpc-unary");
if (platformRpc && unary && results.get("switchyard")) {
  const p1 = platformRpc.find((r) => r.inflight === 1)!;
  const p64 = platformRpc.find((r) => r.inflight === 64)!;
  const u1 = unary.find((r) => r.inflight === 1)!;
  const bound = 1.3 * (ours1.p50 + u1.p50);
  console.log(
    `goal: CallTool with the platform client at 64 in flight >= 0.5x the bus path: ${f(p64.cps, 0)} / ${f(ours64.cps, 0)} = ${f(p64.cps / ours64.cps, 2)}x ${p64.cps >= 0.5 * ours64.cps ? "(met)" : "(NOT met)"}`,
  );
  console.log(
    `goal: its p50 at 1 in flight <= 1.3 x (bus path p50 ${f(ours1.p50)} + bare grpc-js unary p50 ${f(u1.p50)}) = ${f(bound)} ms: ${f(p1.p50)} ms = ${f(p1.p50 / (ours1.p50 + u1.p50), 2)}x the sum ${p1.p50 <= bound ? "(met)" : "(NOT met)"}`,
  );
}
if (offline) {
  console.log(`"no device online" answered after p50 ${f(offline.cached)} ms (user's presence cached), ${f(offline.fresh)} ms (first call for the user: one KV read)`);
}
const mib = (b: number) => f(b / 2 ** 20, 1);
console.log(`\nmemory: ${sockets} idle device sockets (hello done) on one gateway, opened in ${f(openMs / 1000, 1)} s`);
console.log(`  heap used ${mib(base.heapUsed)} → ${mib(loaded.heapUsed)} MiB: ${f((loaded.heapUsed - base.heapUsed) / sockets / 1024, 1)} KiB per socket`);
console.log(`  rss       ${mib(base.rss)} → ${mib(loaded.rss)} MiB: ${f((loaded.rss - base.rss) / sockets / 1024, 1)} KiB per socket (kernel socket buffers not included)`);
console.log(`\nwhole run: ${f((Date.now() - started) / 1000, 1)} s`);
process.exit(0);
