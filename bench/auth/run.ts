/**
 * bench/auth: what the token check and sign-in cost.
 *
 * 1. GetMe through the whole platform with the token check against the same
 *    RPC with the check off (a fixed principal), 1 and 64 calls in flight;
 *    the ratio is the check's cost (goal: at most 10%). Also the check with
 *    its cache off, where every call verifies an ES256 signature. The three
 *    servers run side by side in their own processes and the load client (its
 *    own process too) takes turns on them in short slices, so the ratio holds
 *    on a machine shared with other work.
 * 2. Token verifications per second in one process: the platform verifier
 *    (shape checks + jose, cache off and on) against bare jose jwtVerify,
 *    interleaved.
 * 3. Logins per second through the platform against bare argon2id verifies
 *    with the same parameters and concurrency, taking turns likewise.
 *
 *   npm run bench:auth [-- --ms 3000]   (measured time per cell)
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { createAccessTokenVerifier } from "../../platform/auth/verifier.js";
import { createTestDatabase, startNats } from "../../test/support/infra.js";
import { spawnScript } from "../../test/support/spawn.js";

const { values } = parseArgs({ options: { ms: { type: "string", default: "3000" } } });
const ms = Number(values.ms);
const sliceMs = 500;
const slices = Math.max(1, Math.round(ms / sliceMs));
const tsx = ["--import", "tsx"];
const modes = ["nocheck", "check", "check-nocache"] as const;
const labels = { nocheck: "off (fixed principal)", check: "on (as deployed)", "check-nocache": "on, cache off" };
const testDb = await createTestDatabase("sy_bench_auth");
const nats = await startNats();
const env: Record<string, string> = {
  DATABASE_URL: testDb.url,
  NATS_URL: nats.url,
  AUTH_MASTER_KEY: randomBytes(32).toString("base64"),
  BENCH_USER_ID: "",
};
const children: ChildProcess[] = [];

async function startServer(mode: string): Promise<number> {
  const server = await spawnScript("bench/auth/server.ts", { args: [mode], env, stderr: "inherit" });
  children.push(server.child);
  return server.port;
}

interface ClientResult {
  port: number;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  firstError: string;
}

function runClient(what: string, ports: number[], inflight: number, extra: Record<string, string>): Promise<ClientResult[]> {
  const child = spawn(process.execPath, [...tsx, "bench/auth/client.ts", what, ports.join(","), String(inflight), String(sliceMs), String(slices)], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...extra },
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) =>
    child.once("exit", (code) =>
      code === 0 ? resolve(out.trim().split("\n").map((l) => JSON.parse(l) as ClientResult)) : reject(new Error(`client exited with ${code}`)),
    ),
  );
}

/** Runs `op` with `concurrency` loops for `forMs`; returns operations per second. */
async function throughput(op: () => Promise<unknown>, concurrency: number, forMs: number): Promise<number> {
  let done = 0;
  const until = performance.now() + forMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        await op();
        done++;
      }
    }),
  );
  return (done * 1000) / forMs;
}

const f = (n: number, w: number, d = 0) => n.toFixed(d).padStart(w);
const email = "bench@example.com";
const password = "bench password 0123456789";
try {
  // A user, and a token every server accepts (one database, one master key, one key set).
  const checkPort = await startServer("check");
  const anon = createClient(AuthService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${checkPort}` }));
  const registered = await anon.register({ email, password });
  const accessToken = registered.tokens!.accessToken;
  env.BENCH_USER_ID = registered.user!.userId;
  const jwks = (await (await fetch(`http://127.0.0.1:${checkPort}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
  const ports: Record<(typeof modes)[number], number> = {
    check: checkPort,
    nocheck: await startServer("nocheck"),
    "check-nocache": await startServer("check-nocache"),
  };

  // 1. GetMe with and without the check.
  console.log(`\nbench/auth: GetMe (one indexed SELECT) through the platform; ${slices} slices of ${sliceMs} ms per cell, servers taking turns;`);
  console.log("grpc-js client and each server in their own processes; per-user rate limit off\n");
  console.log("token check            in-flight     req/s   p50 ms   p99 ms  errors   vs check off");
  let cost = NaN;
  for (const inflight of [1, 64]) {
    const results = await runClient("getme", modes.map((m) => ports[m]), inflight, { ACCESS_TOKEN: accessToken });
    const byMode = (m: (typeof modes)[number]) => results.find((r) => r.port === ports[m])!;
    const base = byMode("nocheck").rps;
    for (const m of modes) {
      const r = byMode(m);
      console.log(`${labels[m].padEnd(22)} ${f(inflight, 9)} ${f(r.rps, 9)} ${f(r.p50, 8, 3)} ${f(r.p99, 8, 3)} ${f(r.errors, 7)}   ${(r.rps / base).toFixed(3)}x`);
      if (r.errors > 0) console.log(`   first error: ${r.firstError}`);
    }
    if (inflight === 64) cost = 1 - byMode("check").rps / base;
  }
  console.log(`\ncost of the token check at 64 in flight: ${(cost * 100).toFixed(1)}% of throughput (goal <= 10%)`);

  // 2. Verifications per second, in this process, interleaved.
  const keys = createLocalJWKSet(jwks);
  const opts = { issuer: "switchyard-auth", audience: "switchyard" };
  const uncached = createAccessTokenVerifier({ ...opts, keys, cacheSize: 0 });
  const cached = createAccessTokenVerifier({ ...opts, keys });
  const rates = { bare: 0, platform: 0, cached: 0 };
  for (let i = 0; i < slices; i++) {
    rates.bare += await throughput(() => jwtVerify(accessToken, keys, { ...opts, algorithms: ["ES256"], typ: "at+jwt" }), 16, sliceMs / 2);
    rates.platform += await throughput(() => uncached.verify(accessToken), 16, sliceMs / 2);
    rates.cached += await throughput(() => cached.verify(accessToken), 16, sliceMs / 2);
  }
  console.log(`\ntoken verifications per second (ES256, one process, 16 concurrent, ${slices} interleaved slices of ${sliceMs / 2} ms):`);
  console.log(`  bare jose jwtVerify            ${f(rates.bare / slices, 9)}   1.00x`);
  console.log(`  platform verifier, cache off   ${f(rates.platform / slices, 9)}   ${(rates.platform / rates.bare).toFixed(2)}x`);
  console.log(`  platform verifier, cache hit   ${f(rates.cached / slices, 9)}   ${(rates.cached / rates.bare).toFixed(0)}x`);

  // 3. Logins per second against bare argon2id (port 0: in the client process, taking turns).
  const sql = postgres(testDb.url, { max: 1, onnotice: () => {} });
  const [{ password_hash: stored }] = await sql<{ password_hash: string }[]>`select password_hash from auth.users where email = ${email}`;
  await sql.end();
  console.log(`\nlogins per second, argon2id ${stored.split("$")[3]} (m in KiB), client and baseline taking turns:`);
  console.log("                                      in-flight   per s   p50 ms   p99 ms  vs bare argon2id");
  for (const inflight of [1, 4]) {
    const [bare, login] = await runClient("login", [0, ports.check], inflight, { BENCH_EMAIL: email, BENCH_PASSWORD: password, BENCH_HASH: stored });
    console.log(`  bare argon2id verify              ${f(inflight, 9)} ${f(bare!.rps, 7, 1)} ${f(bare!.p50, 8, 1)} ${f(bare!.p99, 8, 1)}   1.00x`);
    console.log(`  Login through the platform        ${f(inflight, 9)} ${f(login!.rps, 7, 1)} ${f(login!.p50, 8, 1)} ${f(login!.p99, 8, 1)}   ${(login!.rps / bare!.rps).toFixed(2)}x`);
    if (login!.errors > 0) console.log(`   first error: ${login!.firstError}`);
  }
} finally {
  for (const c of children) c.kill("SIGKILL");
  await nats.kill();
  await testDb.drop();
}
process.exit(0);
