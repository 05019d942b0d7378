/**
 * Bad input, each case with the code a client sees. The process must answer
 * every one and keep serving.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { spawnSync } from "node:child_process";
import { gzipSync } from "node:zlib";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { TestingService, UnaryCallRequestSchema, UnaryCallResponseSchema } from "../../gen/switchyard/testing/v1/testing_pb.js";
import type { RunningProcess } from "../../platform/process.js";
import { grpcJsClient, startTestingServer, unary } from "../support/platform-under-test.js";

const READ_MAX = 64 * 1024;
const WRITE_MAX = 64 * 1024;
let proc: RunningProcess;
before(async () => {
  proc = await startTestingServer({ READ_MAX_BYTES: String(READ_MAX), WRITE_MAX_BYTES: String(WRITE_MAX) });
});
after(async () => {
  await proc.stop();
});

/** Sends raw bytes as the request message of `method` through grpc-js. */
function rawCall(method: string, body: Buffer, metadata = new grpc.Metadata()): Promise<grpc.ServiceError | null> {
  const client = new grpc.Client(`127.0.0.1:${proc.port}`, grpc.credentials.createInsecure());
  return new Promise((resolve) =>
    client.makeUnaryRequest(`/switchyard.testing.v1.TestingService/${method}`, (x: Buffer) => x, (x: Buffer) => x, body, metadata, (err) => {
      client.close();
      resolve(err);
    }),
  );
}

/** One gRPC request over a raw HTTP/2 session; resolves with headers, trailers, status and the response body. */
function rawH2(headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<{ status: number; grpcStatus?: string; grpcMessage?: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${proc.port}`);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": "/switchyard.testing.v1.TestingService/UnaryCall", te: "trailers", ...headers });
    let status = 0;
    let grpcStatus: string | undefined;
    let grpcMessage: string | undefined;
    req.on("response", (h) => {
      status = Number(h[":status"]);
      grpcStatus ??= h["grpc-status"] as string | undefined;
      grpcMessage ??= h["grpc-message"] as string | undefined;
    });
    req.on("trailers", (t) => {
      grpcStatus = t["grpc-status"] as string;
      grpcMessage = t["grpc-message"] as string;
    });
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("close", () => {
      session.close();
      resolve({ status, grpcStatus, grpcMessage, body: Buffer.concat(chunks) });
    });
    req.end(body);
  });
}

function frame(payload: Buffer, compressed = false): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

describe("malformed messages answer INVALID_ARGUMENT", () => {
  it("a truncated protobuf", async () => {
    // field 5 (text), length 10, but only 3 bytes follow
    const err = await rawCall("UnaryCall", Buffer.from([0x2a, 10, 0x61, 0x62, 0x63]));
    assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err!.details, /UnaryCallRequest/);
  });

  it("a wrong wire type (wire type 7 does not exist)", async () => {
    const err = await rawCall("UnaryCall", Buffer.from([(5 << 3) | 7, 1]));
    assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
  });

  it("invalid UTF-8 in a string field", async () => {
    const err = await rawCall("UnaryCall", Buffer.from([0x2a, 3, 0xff, 0xfe, 0x41]));
    assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
  });

  it("10k-deep nesting", async () => {
    // Nested{child: Nested{child: ...}} built inside out: tag 0x0a, varint length, inner bytes.
    let inner = Buffer.alloc(0);
    for (let i = 0; i < 10_000; i++) {
      const len: number[] = [];
      let n = inner.length;
      do {
        len.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
        n >>>= 7;
      } while (n > 0);
      inner = Buffer.concat([Buffer.from([0x0a, ...len]), inner]);
    }
    const request = Buffer.concat([Buffer.from([0x0a]), Buffer.from(varint(inner.length)), inner]);
    assert.ok(request.length < READ_MAX, "the nesting alone must trip, not the size limit");
    const err = await rawCall("EchoNested", request);
    assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err!.details, /nests messages more than 100 levels/);
  });

  it("a NUL character in a string field", async () => {
    const client = grpcJsClient(TestingService, proc.port);
    const { error } = await unary(client, "unaryCall", { text: "a\0b" });
    client.close();
    assert.equal(error?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(error!.details, /^text: must not contain a NUL character/);
  });

  it("over gRPC-Web and Connect as well, not INTERNAL", async () => {
    const truncated = Buffer.from([0x2a, 10, 0x61]);
    const web = await fetch(`http://127.0.0.1:${proc.port}/switchyard.testing.v1.TestingService/UnaryCall`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto" },
      body: new Uint8Array(frame(truncated)),
    });
    const webBody = Buffer.from(await web.arrayBuffer()).toString("latin1");
    assert.match(webBody, /grpc-status: 3\r\n/);
    const connect = await fetch(`http://127.0.0.1:${proc.port}/switchyard.testing.v1.TestingService/UnaryCall`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: new Uint8Array(truncated),
    });
    assert.equal(connect.status, 400);
    assert.equal(((await connect.json()) as { code: string }).code, "invalid_argument");
  });
});

function varint(n: number): number[] {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return out;
}

describe("size and encoding limits", () => {
  it("a message over the limit answers RESOURCE_EXHAUSTED", async () => {
    const client = grpcJsClient(TestingService, proc.port);
    const { error } = await unary(client, "unaryCall", { payload: { body: new Uint8Array(READ_MAX + 1) } });
    client.close();
    assert.equal(error?.code, grpc.status.RESOURCE_EXHAUSTED);
  });

  it("a response over the limit answers RESOURCE_EXHAUSTED, on a unary call and mid-stream", async () => {
    const client = grpcJsClient(TestingService, proc.port);
    const { error } = await unary(client, "unaryCall", { responseSize: WRITE_MAX + 1 });
    assert.equal(error?.code, grpc.status.RESOURCE_EXHAUSTED);
    const call = client.streamingOutputCall!({ responseParameters: [{ size: 10 }, { size: WRITE_MAX + 1 }] }) as grpc.ClientReadableStream<{ payload: { body: Uint8Array } }>;
    const got: number[] = [];
    const streamError = await (async () => {
      for await (const msg of call) got.push(msg.payload.body.length);
    })().then(() => undefined, (e: grpc.ServiceError) => e);
    client.close();
    assert.deepEqual(got, [10]);
    assert.equal(streamError?.code, grpc.status.RESOURCE_EXHAUSTED);
  });

  it("a gzip-compressed request is inflated and answered (uncompressed)", async () => {
    const request = toBinary(UnaryCallRequestSchema, create(UnaryCallRequestSchema, { text: "squeezed", payload: { body: new Uint8Array(1000) } }));
    const r = await rawH2({ "content-type": "application/grpc", "grpc-encoding": "gzip" }, frame(gzipSync(request), true));
    assert.equal(r.grpcStatus, "0");
    assert.equal(r.body[0], 0, "the response is not compressed");
    const response = fromBinary(UnaryCallResponseSchema, r.body.subarray(5));
    assert.equal(response.text, "squeezed");
    assert.equal(response.echoedSize, 1000);
  });

  it("a gzip bomb (small on the wire, huge inflated) answers RESOURCE_EXHAUSTED", async () => {
    // A 16 MiB payload field of zeros compresses to ~16 KiB.
    const inflated = Buffer.concat([Buffer.from([0x12, ...varint(16 * 1024 * 1024 + 4), 0x0a, ...varint(16 * 1024 * 1024)]), Buffer.alloc(16 * 1024 * 1024)]);
    const bomb = gzipSync(inflated, { level: 9 });
    assert.ok(bomb.length < READ_MAX, `compressed ${bomb.length} bytes must be under the limit`);
    const r = await rawH2({ "content-type": "application/grpc", "grpc-encoding": "gzip" }, frame(bomb, true));
    assert.equal(r.grpcStatus, String(grpc.status.RESOURCE_EXHAUSTED));
  });

  it("an unknown grpc-encoding answers UNIMPLEMENTED", async () => {
    const r = await rawH2({ "content-type": "application/grpc", "grpc-encoding": "snappy-x" }, frame(Buffer.from([0x2a, 1, 0x61]), true));
    assert.equal(r.grpcStatus, String(grpc.status.UNIMPLEMENTED));
  });

  it("an unknown service or method answers UNIMPLEMENTED", async () => {
    const err = await rawCall("NoSuchMethod", Buffer.alloc(0));
    assert.equal(err?.code, grpc.status.UNIMPLEMENTED);
  });
});

describe("HTTP-level mistakes", () => {
  it("a bad content-type over HTTP/2 is refused with 415", async () => {
    const r = await rawH2({ "content-type": "text/plain" }, Buffer.from("hello"));
    assert.equal(r.status, 415);
  });

  it("a bad content-type over HTTP/1.1 is refused with 415", async () => {
    const res = await fetch(`http://127.0.0.1:${proc.port}/switchyard.testing.v1.TestingService/UnaryCall`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "hello",
    });
    assert.equal(res.status, 415);
  });

  it("both Content-Length and Transfer-Encoding: 400 and the connection is closed", async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(proc.port, "127.0.0.1");
      let data = "";
      s.on("data", (d) => (data += d.toString()));
      s.on("end", () => resolve(data));
      s.on("error", reject);
      s.write(
        "POST /switchyard.testing.v1.TestingService/UnaryCall HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\n" +
          "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      );
    });
    assert.match(reply, /^HTTP\/1\.1 400 Bad Request/);
  });

  it("the server still serves after all of the above", async () => {
    const client = grpcJsClient(TestingService, proc.port);
    const { error } = await unary(client, "emptyCall", {});
    client.close();
    assert.equal(error, undefined);
  });
});

describe("configuration", () => {
  it("a bad environment variable stops the process with a message naming it", () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "app/main.ts"], {
      env: { ...process.env, PORT: "eighty", READ_MAX_BYTES: "12" },
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /PORT: expected a whole number, got "eighty"/);
    assert.match(r.stderr, /READ_MAX_BYTES: expected a number from 1024/);
  });
});
