/**
 * Drives UnaryCall at a fixed number of calls in flight for a fixed time and
 * prints one JSON line: {rps, p50, p99, calls} (latencies in ms; calls
 * counts the warm-up too). Run as
 * `tsx bench/unary/client.ts <grpc-js|connect|platform> <port> <inflight> <ms> [otlp url]`;
 * `platform` is the platform's service client (platform/client.ts); with an
 * OTLP url it traces too (a CLIENT span per call, exported there), as a
 * service calling a traced service does.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { createServiceClient, createServiceTransport } from "../../platform/client.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { startTracing } from "../../platform/telemetry/sdk.js";
import { TestingService, UnaryCallRequestSchema, UnaryCallResponseSchema } from "../../gen/switchyard/testing/v1/testing_pb.js";

const [clientKind, portArg, inflightArg, msArg, tracesTo] = process.argv.slice(2);
const port = Number(portArg);
const inflight = Number(inflightArg);
const measureMs = Number(msArg);
const warmupMs = 500;
const request = create(UnaryCallRequestSchema, { text: "hello, switchyard" });

let call: () => Promise<void>;
if (clientKind === "grpc-js") {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const ser = (v: typeof request) => Buffer.from(toBinary(UnaryCallRequestSchema, v));
  const de = (b: Buffer) => fromBinary(UnaryCallResponseSchema, b);
  call = () =>
    new Promise((resolve, reject) =>
      client.makeUnaryRequest("/switchyard.testing.v1.TestingService/UnaryCall", ser, de, request, (err) => (err ? reject(err) : resolve())),
    );
} else if (clientKind === "platform") {
  if (tracesTo) await startTracing(readPlatformSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: tracesTo }), "bench-client");
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${port}`));
  call = async () => {
    await client.unaryCall(request);
  };
} else {
  const client = createClient(TestingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
  call = async () => {
    await client.unaryCall(request);
  };
}

const latencies: number[] = [];
let measuring = false;
let stop = false;
let calls = 0;
async function worker(): Promise<void> {
  while (!stop) {
    const t0 = performance.now();
    await call();
    calls++;
    if (measuring) latencies.push(performance.now() - t0);
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
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))]!;
process.stdout.write(JSON.stringify({ rps: (latencies.length * 1000) / elapsed, p50: pct(50), p99: pct(99), calls }) + "\n");
process.exit(0);
