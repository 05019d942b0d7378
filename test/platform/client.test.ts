/**
 * The platform's service client (platform/client.ts over node:http2): connect
 * interceptors see every call, errors arrive with their code and details,
 * server streams work, and UNAVAILABLE is retried only where the proto says
 * a method may run twice.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { EchoNestedResponseSchema, TestingService, UnaryCallResponseSchema } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createServiceClient, createServiceTransport } from "../../platform/client.js";
import { createLogger } from "../../platform/log.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { register } from "../../platform/rpc/pipeline.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { waitFor } from "../support/wait.js";

let platform: RunningProcess;
let flaky: grpc.Server;
let flakyPort: number;
/** Calls the flaky server received, by method name. */
const received = { unaryCall: 0, echoNested: 0 };
/** How many calls, from now, the flaky server fails with UNAVAILABLE. */
let failNext = 0;
/** Calls the platform is holding, and those whose caller gave up while it held them. */
const held: string[] = [];
const abandoned: string[] = [];

before(async () => {
  platform = await startProcess(
    [
      {
        name: "testing",
        summary: "the testing service",
        serves: [TestingService],
        start: () => ({
          services: [
            register(TestingService, {
              unaryCall: async (req, ctx) => {
                ctx.responseHeader.set("x-seen", ctx.requestHeader.get("x-added") ?? "none");
                if (req.sleepMs > 0) {
                  // Holds the call until the caller gives up; says so on the way out.
                  held.push(req.text);
                  await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
                  abandoned.push(req.text);
                  return {};
                }
                if (req.text === "slow down") {
                  throw new ConnectError("slow down", Code.ResourceExhausted, undefined, [
                    { desc: RetryInfoSchema, value: { retryDelay: { seconds: 2n, nanos: 0 } } },
                  ]);
                }
                return { text: req.text };
              },
              async *streamingOutputCall(req) {
                for (const p of req.responseParameters) yield { payload: { body: new Uint8Array(p.size) } };
                if (req.responseStatus?.code) throw new ConnectError(req.responseStatus.message, req.responseStatus.code as Code);
              },
            }),
          ],
        }),
      },
    ],
    readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent" }),
    createLogger("silent"),
  );

  // A bare grpc-js server that fails the next `failNext` calls with UNAVAILABLE.
  flaky = new grpc.Server();
  const failOrAnswer = (name: keyof typeof received, answer: () => Buffer) => (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => {
    received[name]++;
    if (failNext > 0) {
      failNext--;
      cb({ code: grpc.status.UNAVAILABLE, details: "try elsewhere" });
    } else cb(null, answer());
  };
  const raw = (b: Buffer) => b;
  flaky.register("/switchyard.testing.v1.TestingService/UnaryCall", failOrAnswer("unaryCall", () => Buffer.from(toBinary(UnaryCallResponseSchema, create(UnaryCallResponseSchema, { text: "ok" })))), raw, raw, "unary");
  flaky.register("/switchyard.testing.v1.TestingService/EchoNested", failOrAnswer("echoNested", () => Buffer.from(toBinary(EchoNestedResponseSchema, create(EchoNestedResponseSchema)))), raw, raw, "unary");
  flakyPort = await new Promise<number>((resolve, reject) =>
    flaky.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
});

after(async () => {
  await platform.stop();
  flaky.forceShutdown();
});

test("interceptors see the request and the response; response headers reach the caller", async () => {
  const seen: string[] = [];
  const interceptor: Interceptor = (next) => async (req) => {
    req.header.set("x-added", "by-interceptor");
    seen.push(`${req.method.name} ${req.url}`);
    const res = await next(req);
    seen.push(`header ${res.header.get("x-seen")}`);
    return res;
  };
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${platform.port}`, [interceptor]));
  let header: Headers | undefined;
  const res = await client.unaryCall({ text: "hi" }, { onHeader: (h) => (header = h) });
  assert.equal(res.text, "hi");
  assert.equal(header?.get("x-seen"), "by-interceptor");
  assert.deepEqual(seen, [`UnaryCall http://127.0.0.1:${platform.port}/switchyard.testing.v1.TestingService/UnaryCall`, "header by-interceptor"]);
});

test("an error arrives with its code, message and details", async () => {
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${platform.port}`));
  const err = await client.unaryCall({ text: "slow down" }).then(
    () => assert.fail("expected RESOURCE_EXHAUSTED"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ConnectError);
  assert.equal(err.code, Code.ResourceExhausted);
  assert.equal(err.rawMessage, "slow down");
  assert.equal(err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds, 2n);
});

test("a server stream delivers every message, then its error", async () => {
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${platform.port}`));
  const sizes: number[] = [];
  for await (const m of client.streamingOutputCall({ responseParameters: [{ size: 1 }, { size: 2 }, { size: 3 }] })) sizes.push(m.payload!.body.length);
  assert.deepEqual(sizes, [1, 2, 3]);
  const got: number[] = [];
  const err = await (async () => {
    for await (const m of client.streamingOutputCall({ responseParameters: [{ size: 4 }], responseStatus: { code: Code.NotFound, message: "gone" } })) got.push(m.payload!.body.length);
  })().then(
    () => assert.fail("expected NOT_FOUND"),
    (e: unknown) => e,
  );
  assert.deepEqual(got, [4]);
  assert.ok(err instanceof ConnectError && err.code === Code.NotFound && err.rawMessage === "gone", String(err));
});

test("UNAVAILABLE is retried for a NO_SIDE_EFFECTS method, never for one without an idempotency level", async () => {
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${flakyPort}`));
  failNext = 2;
  received.unaryCall = 0;
  assert.equal((await client.unaryCall({})).text, "ok", "the third attempt answered");
  assert.equal(received.unaryCall, 3);

  failNext = 1;
  received.echoNested = 0;
  await assert.rejects(client.echoNested({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable);
  assert.equal(received.echoNested, 1, "tried once: the proto does not say it may run twice");
  failNext = 0;
});

test("a target that keeps failing exhausts the retry budget: later calls are tried once", async () => {
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${flakyPort}`));
  failNext = 1_000;
  received.unaryCall = 0;
  const calls = 20;
  for (let i = 0; i < calls; i++) await assert.rejects(client.unaryCall({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable);
  // A full budget of 10 tokens allows retries while more than 5 remain.
  assert.ok(received.unaryCall <= calls + 5, `${received.unaryCall} attempts for ${calls} calls`);
  failNext = 0;
});

test("a DNS name is resolved by the channel (round robin over the addresses that answer)", async () => {
  // localhost may resolve to ::1 as well, where nothing listens: round_robin uses what connects.
  const client = createServiceClient(TestingService, createServiceTransport(`http://localhost:${platform.port}`));
  for (let i = 0; i < 5; i++) assert.equal((await client.unaryCall({ text: `n${i}` }, { timeoutMs: 5000 })).text, `n${i}`);
});

test("a call past its deadline fails DEADLINE_EXCEEDED, and the server sees the caller leave", async () => {
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${platform.port}`));
  await assert.rejects(client.unaryCall({ text: "late", sleepMs: 60_000 }, { timeoutMs: 100 }), (e: unknown) => e instanceof ConnectError && e.code === Code.DeadlineExceeded);
  await waitFor("the server saw the call end", () => abandoned.includes("late"));
});

test("a call the caller aborts fails CANCELED, and the server sees it end", async () => {
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${platform.port}`));
  const controller = new AbortController();
  const call = client.unaryCall({ text: "dropped", sleepMs: 60_000 }, { signal: controller.signal });
  await waitFor("the server holds the call", () => held.includes("dropped"));
  controller.abort();
  await assert.rejects(call, (e: unknown) => e instanceof ConnectError && e.code === Code.Canceled);
  await waitFor("the server saw the call end", () => abandoned.includes("dropped"));
});

test("a connection lost mid-call fails the call UNAVAILABLE, and a method that may not run twice is not retried", async () => {
  // A server that takes the call, then drops the connection.
  let took = 0;
  const server = http2.createServer().on("stream", (stream) => {
    took++;
    stream.session?.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  await assert.rejects(client.echoNested({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable && /lost/.test(e.rawMessage));
  assert.equal(took, 1);
  server.close();
});

test("a compressed response the client did not ask for fails INTERNAL", async () => {
  const server = http2.createServer().on("stream", (stream) => {
    stream.resume();
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(Buffer.from([1, 0, 0, 0, 1, 9])); // flag 1: compressed
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  await assert.rejects(client.echoNested({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Internal && /compressed message the client did not ask for/.test(e.rawMessage));
  server.close();
});

test("a call aborted while its connection is being made fails CANCELED instead of waiting forever", async () => {
  const client = createServiceClient(TestingService, createServiceTransport(`http://127.0.0.1:${platform.port}`));
  const controller = new AbortController();
  const call = client.unaryCall({ text: "never sent", sleepMs: 60_000 }, { signal: controller.signal });
  controller.abort();
  await assert.rejects(call, (e: unknown) => e instanceof ConnectError && e.code === Code.Canceled);
});

test("a server that is not there fails the call UNAVAILABLE naming the address", async () => {
  const client = createServiceClient(TestingService, createServiceTransport("http://127.0.0.1:1"));
  await assert.rejects(client.echoNested({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable && /127\.0\.0\.1:1/.test(e.rawMessage));
});
