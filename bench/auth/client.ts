/**
 * The load client of bench/auth, in its own process: a grpc-js client (the
 * fastest Node gRPC client, so the servers are what is measured) calling one
 * AuthService method at a fixed number of calls in flight.
 *
 * With several servers it takes turns: `slices` rounds of `sliceMs` on each
 * server in order, so every server is measured across the same stretch of
 * time and a machine that gets busier or quieter affects all of them alike.
 * Prints one JSON line per server: {port, rps, p50, p99, errors, firstError}.
 *
 *   tsx bench/auth/client.ts getme <port,port,...> <inflight> <sliceMs> <slices>   (ACCESS_TOKEN set)
 *   tsx bench/auth/client.ts login <port,port,...> <inflight> <sliceMs> <slices>   (BENCH_EMAIL, BENCH_PASSWORD set)
 *
 * Port 0 in a login run is the baseline: argon2id verifies of BENCH_HASH in
 * this process, taking their turns like a server.
 */
import { create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { verify as argon2Verify } from "@node-rs/argon2";
import { GetMeRequestSchema, GetMeResponseSchema, LoginRequestSchema, LoginResponseSchema } from "../../gen/switchyard/auth/v1/auth_pb.js";

const [what, portsArg, inflightArg, sliceArg, slicesArg] = process.argv.slice(2);
const ports = portsArg!.split(",").map(Number);
const inflight = Number(inflightArg);
const sliceMs = Number(sliceArg);
const slices = Number(slicesArg);

const md = new grpc.Metadata();
let path: string;
let input: DescMessage;
let output: DescMessage;
let request: unknown;
if (what === "getme") {
  md.set("authorization", `Bearer ${process.env.ACCESS_TOKEN}`);
  [path, input, output, request] = ["/switchyard.auth.v1.AuthService/GetMe", GetMeRequestSchema, GetMeResponseSchema, create(GetMeRequestSchema)];
} else {
  const req = create(LoginRequestSchema, { email: process.env.BENCH_EMAIL!, password: process.env.BENCH_PASSWORD! });
  [path, input, output, request] = ["/switchyard.auth.v1.AuthService/Login", LoginRequestSchema, LoginResponseSchema, req];
}
const ser = (v: unknown) => Buffer.from(toBinary(input, v as never));
const de = (b: Buffer) => fromBinary(output, b);

interface Tally {
  latencies: number[];
  measuredMs: number;
  errors: number;
  firstError: string;
}

/** Runs `inflight` loops of `one` for `ms`; completions inside the window are counted. */
async function slice(one: () => Promise<unknown>, tally: Tally | undefined, ms: number): Promise<void> {
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          await one();
          if (tally && performance.now() <= end) tally.latencies.push(performance.now() - t0);
        } catch (err) {
          if (tally) {
            tally.errors++;
            tally.firstError ||= String(err);
          }
        }
      }
    }),
  );
  if (tally) tally.measuredMs += ms;
}

const clients = ports.map((p): (() => Promise<unknown>) => {
  if (p === 0) return () => argon2Verify(process.env.BENCH_HASH!, process.env.BENCH_PASSWORD!);
  const client = new grpc.Client(`127.0.0.1:${p}`, grpc.credentials.createInsecure());
  return () => new Promise<void>((resolve, reject) => client.makeUnaryRequest(path, ser, de, request, md, (err) => (err ? reject(err) : resolve())));
});
const tallies: Tally[] = ports.map(() => ({ latencies: [], measuredMs: 0, errors: 0, firstError: "" }));
for (const c of clients) await slice(c, undefined, what === "login" ? 300 : 500); // warm-up
for (let s = 0; s < slices; s++) for (const [i, c] of clients.entries()) await slice(c, tallies[i], sliceMs);
for (const [i, t] of tallies.entries()) {
  t.latencies.sort((a, b) => a - b);
  const pct = (p: number) => t.latencies[Math.min(t.latencies.length - 1, Math.floor((t.latencies.length * p) / 100))] ?? NaN;
  const rps = (t.latencies.length * 1000) / t.measuredMs;
  process.stdout.write(JSON.stringify({ port: ports[i], rps, p50: pct(50), p99: pct(99), errors: t.errors, firstError: t.firstError }) + "\n");
}
process.exit(0);
