/**
 * The servers bench/unary compares, each doing the same work for
 * TestingService/UnaryCall (decode the request, echo its text, encode the
 * response). Run as `tsx bench/unary/servers.ts <kind>`; prints "port <n>".
 *
 * - platform: the full platform serving the same handler, every middleware on
 *   (telemetry with a JSON log line per call and metrics, deadlines and
 *   shutdown, dependency errors, token check, rate limit, validation);
 * - platform-traced: the same with OpenTelemetry tracing on, a SERVER span
 *   per call exported over OTLP/HTTP to the receiver at argv[3];
 * - grpc-js: a bare @grpc/grpc-js Server;
 * - connect-node: a bare connect-node handler on node:http2 (h2c);
 * - http2: a raw node:http2 handler speaking just enough gRPC.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import { TestingService, UnaryCallRequestSchema, UnaryCallResponseSchema, type UnaryCallRequest } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createLogDestination, createLogger } from "../../platform/log.js";
import { startProcess } from "../../platform/process.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { register } from "../../platform/rpc/pipeline.js";

const path = "/switchyard.testing.v1.TestingService/UnaryCall";
const reply = (req: UnaryCallRequest) => create(UnaryCallResponseSchema, { text: req.text });

async function platform(tracesTo?: string): Promise<number> {
  // One JSON line per call goes to /dev/null through the production log
  // destination: the cost of writing them is paid, the bench output stays readable.
  const settings = readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...(tracesTo ? { OTEL_EXPORTER_OTLP_ENDPOINT: tracesTo } : {}) });
  const log = createLogger("info", createLogDestination("/dev/null"));
  // The same handler as the bare servers; everything around it is the platform's.
  const service = register(TestingService, { unaryCall: (req) => reply(req) });
  const proc = await startProcess([{ name: "testing", summary: "bench", serves: [TestingService], start: () => ({ services: [service] }) }], settings, log);
  return proc.port;
}

function grpcJs(): Promise<number> {
  const server = new grpc.Server();
  server.register(
    path,
    (call: grpc.ServerUnaryCall<UnaryCallRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, reply(call.request)),
    (v: unknown) => Buffer.from(toBinary(UnaryCallResponseSchema, v as never)),
    (b: Buffer) => fromBinary(UnaryCallRequestSchema, b),
    "unary",
  );
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
}

function connectNode(): Promise<number> {
  const handler = connectNodeAdapter({ routes: (r) => r.service(TestingService, { unaryCall: (req) => reply(req) }) });
  const server = http2.createServer(handler);
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
}

function rawHttp2(): Promise<number> {
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    if (headers[":path"] !== path) {
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" }, { endStream: true });
      return;
    }
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const body = Buffer.concat(chunks);
      const req = fromBinary(UnaryCallRequestSchema, body.subarray(5, 5 + body.readUInt32BE(1)));
      const out = toBinary(UnaryCallResponseSchema, reply(req));
      const frame = Buffer.alloc(5 + out.length);
      frame.writeUInt32BE(out.length, 1);
      frame.set(out, 5);
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(frame);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)));
}

const kinds = {
  platform: () => platform(),
  "platform-traced": () => platform(process.argv[3] ?? "http://127.0.0.1:4318"),
  "grpc-js": grpcJs,
  "connect-node": connectNode,
  http2: rawHttp2,
} as const;
const kind = process.argv[2] as keyof typeof kinds;
if (!(kind in kinds)) throw new Error(`usage: servers.ts ${Object.keys(kinds).join("|")}`);
process.once("SIGINT", () => process.exit(0)); // lets --cpu-prof write its profile
process.stdout.write(`port ${await kinds[kind]()}\n`);
