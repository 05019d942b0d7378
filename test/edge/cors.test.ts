/**
 * CORS on the services' own HTTP/1.1 path, for browsers that call them
 * directly: an allowed origin's preflight gets the headers gRPC-Web needs, a
 * disallowed origin gets no Access-Control-Allow-Origin, and credentials are
 * never allowed, with "*" or otherwise.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { ConfigError } from "../../platform/config.js";
import type { RunningProcess } from "../../platform/process.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { startTestingServer } from "../support/platform-under-test.js";
import { frame, unframe } from "./grpc-web-wire.js";

const allowed = "https://console.example.com";
const emptyCall = `/${TestingService.typeName}/EmptyCall`;

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function request(port: number, method: string, path: string, headers: Record<string, string>, body?: Uint8Array): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const preflight = (port: number, origin: string) =>
  request(port, "OPTIONS", emptyCall, {
    origin,
    "access-control-request-method": "POST",
    "access-control-request-headers": "content-type,x-grpc-web,x-user-agent,authorization",
  });
const grpcWebCall = (port: number, origin: string) =>
  request(port, "POST", emptyCall, { origin, "content-type": "application/grpc-web+proto", "x-grpc-web": "1" }, frame(new Uint8Array()));
const list = (v: string | string[] | undefined) => String(v ?? "").toLowerCase().split(/\s*,\s*/);

describe("with listed origins", () => {
  let proc: RunningProcess;
  before(async () => (proc = await startTestingServer({ ALLOWED_ORIGINS: `${allowed},http://localhost:5173` })));
  after(() => proc.stop());

  test("a preflight from an allowed origin gets the headers a gRPC-Web call needs", async () => {
    const res = await preflight(proc.port, allowed);
    assert.equal(res.status, 204);
    assert.equal(res.headers["access-control-allow-origin"], allowed);
    assert.ok(list(res.headers["access-control-allow-methods"]).includes("post"));
    for (const h of ["content-type", "x-grpc-web", "x-user-agent", "authorization", "grpc-timeout"]) {
      assert.ok(list(res.headers["access-control-allow-headers"]).includes(h), `allows request header ${h}`);
    }
    assert.ok(Number(res.headers["access-control-max-age"]) > 0);
    assert.match(String(res.headers.vary), /origin/i, "caches keep origins apart");
    assert.equal(res.headers["access-control-allow-credentials"], undefined);
  });

  test("the call itself from an allowed origin can read grpc-status, grpc-message and grpc-status-details-bin", async () => {
    const res = await grpcWebCall(proc.port, allowed);
    assert.equal(res.status, 200);
    assert.equal(unframe(res.body).trailers["grpc-status"], "0");
    assert.equal(res.headers["access-control-allow-origin"], allowed);
    const exposed = list(res.headers["access-control-expose-headers"]);
    for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) assert.ok(exposed.includes(h), `exposes ${h}`);
  });

  test("a disallowed origin gets no Access-Control-Allow-Origin, on the preflight or the call", async () => {
    const pre = await preflight(proc.port, "https://evil.example.net");
    assert.equal(pre.status, 403);
    assert.equal(pre.headers["access-control-allow-origin"], undefined);
    assert.equal(pre.headers["access-control-allow-methods"], undefined);
    const call = await grpcWebCall(proc.port, "https://evil.example.net");
    assert.equal(call.headers["access-control-allow-origin"], undefined);
    assert.equal(call.headers["access-control-expose-headers"], undefined);
    // An origin that merely starts like an allowed one is not allowed.
    const lookalike = await preflight(proc.port, `${allowed}.evil.example.net`);
    assert.equal(lookalike.headers["access-control-allow-origin"], undefined);
  });

  test("a request without Origin (not a browser's cross-origin call) is served as before", async () => {
    const res = await request(proc.port, "POST", emptyCall, { "content-type": "application/grpc-web+proto" }, frame(new Uint8Array()));
    assert.equal(unframe(res.body).trailers["grpc-status"], "0");
    assert.equal(res.headers["access-control-allow-origin"], undefined);
  });
});

describe('with ALLOWED_ORIGINS="*"', () => {
  let proc: RunningProcess;
  before(async () => (proc = await startTestingServer({ ALLOWED_ORIGINS: "*" })));
  after(() => proc.stop());

  test("any origin gets \"*\", and credentials are never allowed with it", async () => {
    for (const res of [await preflight(proc.port, "https://anywhere.example.org"), await grpcWebCall(proc.port, "https://anywhere.example.org")]) {
      assert.equal(res.headers["access-control-allow-origin"], "*");
      assert.equal(res.headers["access-control-allow-credentials"], undefined);
    }
  });
});

test("a malformed ALLOWED_ORIGINS stops the process with a message naming it", () => {
  for (const bad of ["console.example.com", "https://console.example.com/app", "ftp://files.example.com"]) {
    assert.throws(
      () => readPlatformSettings({ ALLOWED_ORIGINS: bad }),
      (err: unknown) => err instanceof ConfigError && /ALLOWED_ORIGINS/.test(err.message) && err.message.includes(bad),
      bad,
    );
  }
});
