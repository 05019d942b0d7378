/**
 * bench/auth: what the token check and sign-in cost.
 *
 * 1. GetMe through the whole platform with the token check against the same
 *    RPC with the check off (a fixed principal), server and load client in
 *    separate processes, 1 and 64 calls in flight; the ratio is the check's
 *    cost (goal: at most 10%). Also the check with its cache off, where every
 *    call verifies an ES256 signature.
 * 2. Token verifications per second in one process: the platform verifier
 *    (shape checks + jose, cache off and on) against bare jose jwtVerify.
 * 3. Logins per second through the platform against bare argon2id verifies
 *    with the same parameters, at the same concurrency.
 *
 * Modes alternate within each round, and each cell reports its best round,
 * so a machine shared with other work shows up as noise rather than as a
 * ratio.
 *
 *   npm run bench:auth [-- --ms 2000 --rounds 2]
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { verify as argon2Verify } from "@node-rs/argon2";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { createAccessTokenVerifier } from "../../platform/auth/verifier.js";
import { createTestDatabase, startNats } from "../../test/support/infra.js";

const { values } = parseArgs({ options: { ms: { type: "string", default: "2000" }, rounds: { type: "string", default: "2" } } });
const ms = Number(values.ms);
const tsx = ["--import", "tsx"];
const modes = ["nocheck", "check", "check-nocache"] as const;
const testDb = await createTestDatabase("sy_bench_auth");
const nats = await startNats();
const env = { ...process.env, DATABASE_URL: testDb.url, NATS_URL: nats.url, AUTH_MASTER_KEY: randomBytes(32).toString("base64"), BENCH_USER_ID: "" };

function startServer(mode: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [...tsx, "bench/auth/server.ts", mode], { stdio: ["ignore", "pipe", "inherit"], env });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.once("exit", (code) => reject(new Error(`${mode} server exited with ${code}`)));
  });
}

async function stopServer(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

interface ClientResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  firstError: string;
}

function runClient(what: string, port: number, inflight: number, extra: Record<string, string>): Promise<ClientResult> {
  const child = spawn(process.execPath, [...tsx, "bench/auth/client.ts", what, String(port), String(inflight), String(ms)], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...extra },
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) =>
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out) as ClientResult) : reject(new Error(`client exited with ${code}`)))),
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

const email = "bench@example.com";
const password = "bench password 0123456789";
let accessToken = "";
let jwks: JSONWebKeySet = { keys: [] };
try {
  // A user and a token every server mode accepts (same database, same master key, same keys).
  {
    const { child, port } = await startServer("check");
    const client = createClient(AuthService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    const r = await client.register({ email, password });
    accessToken = r.tokens!.accessToken;
    env.BENCH_USER_ID = r.user!.userId;
    jwks = (await (await fetch(`http://127.0.0.1:${port}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
    await stopServer(child);
  }

  // 1. GetMe with and without the check.
  type Row = { mode: string; inflight: number } & ClientResult;
  const rows: Row[] = [];
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const mode of modes) {
      const { child, port } = await startServer(mode);
      for (const inflight of [1, 64]) rows.push({ mode, inflight, ...(await runClient("getme", port, inflight, { ACCESS_TOKEN: accessToken })) });
      await stopServer(child);
    }
  }
  const best = (mode: string, inflight: number) => rows.filter((r) => r.mode === mode && r.inflight === inflight).sort((a, b) => b.rps - a.rps)[0]!;
  console.log(`\nbench/auth: GetMe (one indexed SELECT) through the platform, ${ms} ms per cell, best of ${values.rounds} round(s);`);
  console.log("grpc-js client in its own process, server in its own process, per-user rate limit off\n");
  console.log("token check            in-flight     req/s   p50 ms   p99 ms  errors   vs check off");
  for (const inflight of [1, 64]) {
    const base = best("nocheck", inflight).rps;
    for (const mode of modes) {
      const r = best(mode, inflight);
      const label = { nocheck: "off (fixed principal)", check: "on (as deployed)", "check-nocache": "on, cache off" }[mode];
      console.log(
        `${label.padEnd(22)} ${String(inflight).padStart(9)} ${r.rps.toFixed(0).padStart(9)} ${r.p50.toFixed(3).padStart(8)} ${r.p99.toFixed(3).padStart(8)} ${String(r.errors).padStart(7)}   ${(r.rps / base).toFixed(3)}x`,
      );
      if (r.errors > 0) console.log(`   first error: ${r.firstError}`);
    }
  }
  const cost = 1 - best("check", 64).rps / best("nocheck", 64).rps;
  console.log(`\ncost of the token check at 64 in flight: ${(cost * 100).toFixed(1)}% of throughput (goal <= 10%)`);

  // 2. Verifications per second, in this process.
  const verifyMs = Math.min(ms, 2000);
  const keys = createLocalJWKSet(jwks);
  const opts = { issuer: "switchyard-auth", audience: "switchyard" };
  const uncached = createAccessTokenVerifier({ ...opts, keys, cacheSize: 0 });
  const cached = createAccessTokenVerifier({ ...opts, keys });
  // Interleaved, best of three: one process, so a busy machine shows as noise, not as a ratio.
  let bare = 0;
  let platformRate = 0;
  let cachedRate = 0;
  for (let i = 0; i < 3; i++) {
    bare = Math.max(bare, await throughput(() => jwtVerify(accessToken, keys, { ...opts, algorithms: ["ES256"], typ: "at+jwt" }), 16, verifyMs / 3));
    platformRate = Math.max(platformRate, await throughput(() => uncached.verify(accessToken), 16, verifyMs / 3));
    cachedRate = Math.max(cachedRate, await throughput(() => cached.verify(accessToken), 16, verifyMs / 3));
  }
  console.log(`\ntoken verifications per second (ES256, one process, 16 concurrent, best of 3 interleaved runs of ${Math.round(verifyMs / 3)} ms):`);
  console.log(`  bare jose jwtVerify            ${bare.toFixed(0).padStart(9)}   1.00x`);
  console.log(`  platform verifier, cache off   ${platformRate.toFixed(0).padStart(9)}   ${(platformRate / bare).toFixed(2)}x`);
  console.log(`  platform verifier, cache hit   ${cachedRate.toFixed(0).padStart(9)}   ${(cachedRate / bare).toFixed(2)}x`);

  // 3. Logins per second against bare argon2id.
  const sql = postgres(testDb.url, { max: 1, onnotice: () => {} });
  const [{ password_hash: stored }] = await sql<{ password_hash: string }[]>`select password_hash from auth.users where email = ${email}`;
  await sql.end();
  const { child, port } = await startServer("check");
  console.log(`\nlogins per second, argon2id m=19456 KiB t=2 p=1 (stored: ${stored.split("$")[3]}):`);
  console.log("                                      in-flight   per s   vs bare argon2id");
  for (const inflight of [1, 4]) {
    const rawArgon = await throughput(() => argon2Verify(stored, password), inflight, Math.min(ms, 2000));
    const login = await runClient("login", port, inflight, { BENCH_EMAIL: email, BENCH_PASSWORD: password });
    console.log(`  bare argon2id verify, in-process   ${String(inflight).padStart(9)} ${rawArgon.toFixed(1).padStart(7)}   1.00x`);
    console.log(
      `  Login through the platform         ${String(inflight).padStart(9)} ${login.rps.toFixed(1).padStart(7)}   ${(login.rps / rawArgon).toFixed(2)}x   p50 ${login.p50.toFixed(1)} ms, p99 ${login.p99.toFixed(1)} ms, errors ${login.errors}`,
    );
    if (login.errors > 0) console.log(`   first error: ${login.firstError}`);
  }
  await stopServer(child);
} finally {
  await nats.kill();
  await testDb.drop();
}
process.exit(0);
