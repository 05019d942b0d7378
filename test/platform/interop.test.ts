/**
 * The gRPC interop cases that apply to unary and server streaming, against
 * the platform serving the conformance TestingService: first with
 * @grpc/grpc-js as the client (gRPC over h2c), then with connect-node's
 * gRPC-Web and Connect transports (HTTP/1.1).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import type { RunningProcess } from "../../platform/process.js";
import { connectClients, grpcJsClient, startTestingServer, unary } from "../support/platform-under-test.js";

const specialMessage = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

let proc: RunningProcess;
before(async () => {
  proc = await startTestingServer();
});
after(async () => {
  await proc.stop();
});

describe("interop over gRPC with @grpc/grpc-js", () => {
  let client: ReturnType<typeof grpcJsClient>;
  before(() => {
    client = grpcJsClient(TestingService, proc.port);
  });
  after(() => client.close());

  it("empty_unary", async () => {
    const { response, error } = await unary(client, "emptyCall", {});
    assert.equal(error, undefined);
    assert.equal((response as { $typeName: string }).$typeName, "switchyard.testing.v1.EmptyCallResponse");
  });

  it("large_unary: 271828-byte request, 314159-byte response", async () => {
    const { response, error } = await unary<{ payload: { body: Uint8Array }; echoedSize: number }>(client, "unaryCall", {
      responseSize: 314159,
      payload: { body: new Uint8Array(271828) },
    });
    assert.equal(error, undefined);
    assert.equal(response!.payload.body.length, 314159);
    assert.equal(response!.echoedSize, 271828);
  });

  it("server_streaming", async () => {
    const sizes = [31415, 9, 2653, 58979];
    const call = client.streamingOutputCall!({ responseParameters: sizes.map((size) => ({ size })) }) as grpc.ClientReadableStream<{
      payload: { body: Uint8Array };
    }>;
    const got: number[] = [];
    for await (const msg of call) got.push(msg.payload.body.length);
    assert.deepEqual(got, sizes);
  });

  it("client_streaming", async () => {
    const sizes = [27182, 8, 1828, 45904];
    const response = new Promise<{ aggregatedPayloadSize: number }>((resolve, reject) => {
      const call = client.streamingInputCall!((err: grpc.ServiceError | null, res: { aggregatedPayloadSize: number }) => (err ? reject(err) : resolve(res))) as grpc.ClientWritableStream<unknown>;
      for (const size of sizes) call.write({ payload: { body: new Uint8Array(size) } });
      call.end();
    });
    assert.equal((await response).aggregatedPayloadSize, 74922);
  });

  it("ping_pong: each request answered before the next is sent", async () => {
    const call = client.fullDuplexCall!() as grpc.ClientDuplexStream<unknown, { payload: { body: Uint8Array } }>;
    const status = new Promise<grpc.StatusObject>((r) => call.once("status", r));
    for (const size of [31415, 9, 2653, 58979]) {
      const reply = new Promise<{ payload: { body: Uint8Array } }>((r) => call.once("data", r));
      call.write({ payload: { body: new Uint8Array(size) } });
      assert.equal((await reply).payload.body.length, size);
    }
    call.end();
    call.resume();
    assert.equal((await status).code, grpc.status.OK);
  });

  it("custom_metadata: initial and trailing, text and -bin, unary and streaming", async () => {
    const md = new grpc.Metadata();
    md.set("x-grpc-test-echo-initial", "test_initial_metadata_value");
    md.set("x-grpc-test-echo-trailing-bin", Buffer.from([0xab, 0xab, 0xab]));
    const { initial, trailing, error } = await unary(client, "unaryCall", { responseSize: 314159, payload: { body: new Uint8Array(271828) } }, { metadata: md });
    assert.equal(error, undefined);
    assert.deepEqual(initial!.get("x-grpc-test-echo-initial"), ["test_initial_metadata_value"]);
    assert.deepEqual(trailing!.get("x-grpc-test-echo-trailing-bin"), [Buffer.from([0xab, 0xab, 0xab])]);

    const call = client.streamingOutputCall!({ responseParameters: [{ size: 314159 }] }, md) as grpc.ClientReadableStream<unknown>;
    const streamInitial = new Promise<grpc.Metadata>((r) => call.once("metadata", r));
    const streamStatus = new Promise<grpc.StatusObject>((r) => call.once("status", r));
    for await (const _ of call) void _;
    assert.deepEqual((await streamInitial).get("x-grpc-test-echo-initial"), ["test_initial_metadata_value"]);
    assert.deepEqual((await streamStatus).metadata.get("x-grpc-test-echo-trailing-bin"), [Buffer.from([0xab, 0xab, 0xab])]);
  });

  it("status_code_and_message", async () => {
    const { error } = await unary(client, "unaryCall", { responseStatus: { code: 2, message: "test status message" } });
    assert.equal(error?.code, grpc.status.UNKNOWN);
    assert.equal(error?.details, "test status message");
  });

  it("special_status_message", async () => {
    const { error } = await unary(client, "unaryCall", { responseStatus: { code: 2, message: specialMessage } });
    assert.equal(error?.code, grpc.status.UNKNOWN);
    assert.equal(error?.details, specialMessage);
  });

  it("unimplemented_method", async () => {
    const rogue = new grpc.Client(`127.0.0.1:${proc.port}`, grpc.credentials.createInsecure());
    const error = await new Promise<grpc.ServiceError>((resolve) =>
      rogue.makeUnaryRequest("/switchyard.testing.v1.TestingService/UnimplementedCall", (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), (err) => resolve(err!)),
    );
    rogue.close();
    assert.equal(error.code, grpc.status.UNIMPLEMENTED);
  });

  it("unimplemented_service", async () => {
    const rogue = new grpc.Client(`127.0.0.1:${proc.port}`, grpc.credentials.createInsecure());
    const error = await new Promise<grpc.ServiceError>((resolve) =>
      rogue.makeUnaryRequest("/grpc.testing.UnimplementedService/UnimplementedCall", (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), (err) => resolve(err!)),
    );
    rogue.close();
    assert.equal(error.code, grpc.status.UNIMPLEMENTED);
  });

  it("cancel_after_begin", async () => {
    const call = client.streamingInputCall!((err: grpc.ServiceError | null) => void err) as grpc.ClientWritableStream<unknown>;
    const status = new Promise<grpc.StatusObject>((r) => call.once("status", r));
    call.cancel();
    assert.equal((await status).code, grpc.status.CANCELLED);
  });

  it("cancel_after_first_response", async () => {
    const call = client.fullDuplexCall!() as grpc.ClientDuplexStream<unknown, { payload: { body: Uint8Array } }>;
    const status = new Promise<grpc.StatusObject>((r) => call.once("status", r));
    call.on("error", () => {});
    call.write({ payload: { body: new Uint8Array(27182) } });
    const first = await new Promise<{ payload: { body: Uint8Array } }>((r) => call.once("data", r));
    assert.equal(first.payload.body.length, 27182);
    call.cancel();
    assert.equal((await status).code, grpc.status.CANCELLED);
  });

  it("timeout_on_sleeping_server", async () => {
    const { error } = await unary(client, "unaryCall", { sleepMs: 5000 }, { deadline: new Date(Date.now() + 50) });
    assert.equal(error?.code, grpc.status.DEADLINE_EXCEEDED);
  });

  it("the handler sees the caller's deadline", async () => {
    const { response } = await unary<{ deadlineRemainingMs: bigint }>(client, "unaryCall", {}, { deadline: new Date(Date.now() + 3000) });
    assert.ok(response!.deadlineRemainingMs > 2000n && response!.deadlineRemainingMs <= 3000n, `remaining ${response!.deadlineRemainingMs}`);
  });
});

for (const protocol of ["grpc-web", "connect"] as const) {
  describe(`interop over ${protocol} with connect-node (HTTP/1.1)`, () => {
    const client = () => connectClients(proc.port)[protocol];

    it("empty_unary", async () => {
      const res = await client().emptyCall({});
      assert.equal(res.$typeName, "switchyard.testing.v1.EmptyCallResponse");
    });

    it("large_unary: 271828-byte request, 314159-byte response", async () => {
      const res = await client().unaryCall({ responseSize: 314159, payload: { body: new Uint8Array(271828) } });
      assert.equal(res.payload?.body.length, 314159);
      assert.equal(res.echoedSize, 271828);
    });

    it("server_streaming", async () => {
      const sizes = [31415, 9, 2653, 58979];
      const got: number[] = [];
      for await (const m of client().streamingOutputCall({ responseParameters: sizes.map((size) => ({ size })) })) got.push(m.payload!.body.length);
      assert.deepEqual(got, sizes);
    });

    it("custom_metadata: initial and trailing, text and -bin", async () => {
      const headers = new Headers({ "x-grpc-test-echo-initial": "test_initial_metadata_value", "x-grpc-test-echo-trailing-bin": "q6ur" });
      let header = undefined as Headers | undefined;
      let trailer = undefined as Headers | undefined;
      await client().unaryCall({ responseSize: 1 }, { headers, onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) });
      assert.equal(header?.get("x-grpc-test-echo-initial"), "test_initial_metadata_value");
      assert.equal(trailer?.get("x-grpc-test-echo-trailing-bin"), "q6ur");
      const seen: { header?: Headers; trailer?: Headers } = {};
      const stream = client().streamingOutputCall({ responseParameters: [{ size: 1 }] }, { headers, onHeader: (h) => (seen.header = h), onTrailer: (t) => (seen.trailer = t) });
      for await (const _ of stream) void _;
      assert.equal(seen.header?.get("x-grpc-test-echo-initial"), "test_initial_metadata_value");
      assert.equal(seen.trailer?.get("x-grpc-test-echo-trailing-bin"), "q6ur");
    });

    it("status_code_and_message and special_status_message", async () => {
      for (const message of ["test status message", specialMessage]) {
        const err = await client()
          .unaryCall({ responseStatus: { code: 2, message } })
          .then(() => undefined, (e: unknown) => ConnectError.from(e));
        assert.equal(err?.code, Code.Unknown);
        assert.equal(err?.rawMessage, message);
      }
    });

    it("unimplemented_method and unimplemented_service", async () => {
      for (const path of ["/switchyard.testing.v1.TestingService/UnimplementedCall", "/grpc.testing.UnimplementedService/UnimplementedCall"]) {
        const res = await fetch(`http://127.0.0.1:${proc.port}${path}`, {
          method: "POST",
          headers: { "content-type": protocol === "grpc-web" ? "application/grpc-web+proto" : "application/proto" },
          body: new Uint8Array(protocol === "grpc-web" ? 5 : 0),
        });
        // Neither protocol routes an unknown path: HTTP 404, which both map to UNIMPLEMENTED.
        assert.equal(res.status, 404);
      }
    });

    it("cancel_after_begin and cancel_after_first_response", async () => {
      const before = new AbortController();
      before.abort();
      const early = await client()
        .unaryCall({ sleepMs: 1000 }, { signal: before.signal })
        .then(() => undefined, (e: unknown) => ConnectError.from(e));
      assert.equal(early?.code, Code.Canceled);

      const ac = new AbortController();
      const stream = client().streamingOutputCall({ responseParameters: [{ size: 10 }, { size: 10, intervalMs: 5000 }] }, { signal: ac.signal });
      let got = 0;
      const err = await (async () => {
        for await (const _ of stream) {
          got++;
          ac.abort();
        }
      })().then(() => undefined, (e: unknown) => ConnectError.from(e));
      assert.equal(got, 1);
      assert.equal(err?.code, Code.Canceled);
    });

    it("timeout_on_sleeping_server", async () => {
      const err = await client()
        .unaryCall({ sleepMs: 5000 }, { timeoutMs: 50 })
        .then(() => undefined, (e: unknown) => ConnectError.from(e));
      assert.equal(err?.code, Code.DeadlineExceeded);
    });
  });
}
