/**
 * The load client of bench/auth, in its own process: a grpc-js client (the
 * fastest Node gRPC client, so the server is what is measured) calling one
 * AuthService method at a fixed number of calls in flight for a fixed time.
 * Prints one JSON line: {rps, p50, p99, errors} (latencies in ms).
 *
 *   tsx bench/auth/client.ts getme <port> <inflight> <ms>     (ACCESS_TOKEN in the environment)
 *   tsx bench/auth/client.ts login <port> <inflight> <ms>     (BENCH_EMAIL, BENCH_PASSWORD)
 */
import { create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { GetMeRequestSchema, GetMeResponseSchema, LoginRequestSchema, LoginResponseSchema } from "../../gen/switchyard/auth/v1/auth_pb.js";

const [what, portArg, inflightArg, msArg] = process.argv.slice(2);
const inflight = Number(inflightArg);
const measureMs = Number(msArg);
const warmupMs = what === "login" ? 300 : 500;
const client = new grpc.Client(`127.0.0.1:${portArg}`, grpc.credentials.createInsecure());

function unary(path: string, input: DescMessage, output: DescMessage, request: unknown, md: grpc.Metadata): () => Promise<void> {
  const ser = (v: unknown) => Buffer.from(toBinary(input, v as never));
  const de = (b: Buffer) => fromBinary(output, b);
  return () => new Promise((resolve, reject) => client.makeUnaryRequest(path, ser, de, request, md, (err) => (err ? reject(err) : resolve())));
}

const md = new grpc.Metadata();
let call: () => Promise<void>;
if (what === "getme") {
  md.set("authorization", `Bearer ${process.env.ACCESS_TOKEN}`);
  call = unary("/switchyard.auth.v1.AuthService/GetMe", GetMeRequestSchema, GetMeResponseSchema, create(GetMeRequestSchema), md);
} else {
  const req = create(LoginRequestSchema, { email: process.env.BENCH_EMAIL!, password: process.env.BENCH_PASSWORD! });
  call = unary("/switchyard.auth.v1.AuthService/Login", LoginRequestSchema, LoginResponseSchema, req, md);
}

const latencies: number[] = [];
let errors = 0;
let firstError = "";
let measuring = false;
let stop = false;
async function worker(): Promise<void> {
  while (!stop) {
    const t0 = performance.now();
    try {
      await call();
      if (measuring) latencies.push(performance.now() - t0);
    } catch (err) {
      errors++;
      firstError ||= String(err);
    }
  }
}
const workers = Array.from({ length: inflight }, worker);
await new Promise((r) => setTimeout(r, warmupMs));
measuring = true;
const start = performance.now();
await new Promise((r) => setTimeout(r, measureMs));
measuring = false;
const elapsed = performance.now() - start;
stop = true;
await Promise.all(workers);
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))] ?? NaN;
process.stdout.write(JSON.stringify({ rps: (latencies.length * 1000) / elapsed, p50: pct(50), p99: pct(99), errors, firstError }) + "\n");
process.exit(0);
