/**
 * grpc health and server reflection, driven by `buf curl` with no local
 * protos: what an operator or a developer does against a running service.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import type { RunningProcess } from "../../platform/process.js";
import { grpcJsClient, startTestingServer } from "../support/platform-under-test.js";

const run = promisify(execFile);
let proc: RunningProcess;
let base: string;

/** Runs `buf curl` over gRPC (h2c) with reflection; resolves with its stdout. */
async function bufCurl(...args: string[]): Promise<string> {
  const { stdout } = await run("node_modules/.bin/buf", ["curl", "--http2-prior-knowledge", "--protocol", "grpc", "--timeout", "10s", ...args], {
    encoding: "utf8",
  });
  return stdout;
}

before(async () => {
  proc = await startTestingServer();
  base = `http://127.0.0.1:${proc.port}`;
});
after(async () => {
  await proc.stop();
});

describe("server reflection through buf curl", () => {
  it("lists every served service (reflection v1)", async () => {
    const services = (await bufCurl("--list-services", base)).trim().split("\n");
    assert.deepEqual(services.sort(), [
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "switchyard.testing.v1.TestingService",
    ]);
  });

  it("lists services over reflection v1alpha too", async () => {
    const out = await bufCurl("--reflect-protocol", "grpc-v1alpha", "--list-services", base);
    assert.match(out, /^switchyard\.testing\.v1\.TestingService$/m);
  });

  it("lists methods and calls an RPC using only the server's descriptors", async () => {
    const methods = await bufCurl("--list-methods", base);
    assert.match(methods, /^switchyard\.testing\.v1\.TestingService\/UnaryCall$/m);
    const reply = JSON.parse(await bufCurl("-d", '{"text":"hello","responseSize":3}', `${base}/switchyard.testing.v1.TestingService/UnaryCall`)) as {
      text: string;
      payload: { body: string };
    };
    assert.equal(reply.text, "hello");
    assert.equal(Buffer.from(reply.payload.body, "base64").length, 3);
  });
});

describe("grpc.health.v1", () => {
  it("Check answers SERVING for the process and for each service", async () => {
    for (const service of ["", "switchyard.testing.v1.TestingService"]) {
      const out = JSON.parse(await bufCurl("-d", JSON.stringify({ service }), `${base}/grpc.health.v1.Health/Check`)) as { status: string };
      assert.equal(out.status, "SERVING", `status of "${service}"`);
    }
  });

  it("Check of an unknown service answers NOT_FOUND", async () => {
    await assert.rejects(bufCurl("-d", '{"service":"nope.v1.Nope"}', `${base}/grpc.health.v1.Health/Check`), /not_found/);
  });

  it("List names every service", async () => {
    const out = JSON.parse(await bufCurl("-d", "{}", `${base}/grpc.health.v1.Health/List`)) as { statuses: Record<string, { status: string }> };
    assert.equal(out.statuses["switchyard.testing.v1.TestingService"]?.status, "SERVING");
  });

  it("Watch streams the current status, then each change", async () => {
    const client = grpcJsClient(Health, proc.port);
    const call = client.watch!({ service: "switchyard.testing.v1.TestingService" }) as grpc.ClientReadableStream<{ status: Status }>;
    call.on("error", () => {});
    const seen: Status[] = [];
    const two = new Promise<void>((resolve) =>
      call.on("data", (m: { status: Status }) => {
        seen.push(m.status);
        if (seen.length === 1) proc.server.health.set("switchyard.testing.v1.TestingService", Status.NOT_SERVING);
        if (seen.length === 2) resolve();
      }),
    );
    await two;
    call.cancel();
    client.close();
    proc.server.health.set("switchyard.testing.v1.TestingService", Status.SERVING);
    assert.deepEqual(seen, [Status.SERVING, Status.NOT_SERVING]);
  });
});

describe("HTTP probes", () => {
  it("/healthz is alive and /readyz ready", async () => {
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(((await ready.json()) as { ready: boolean }).ready, true);
  });

  it("/metrics counts RPCs by method and code", async () => {
    await bufCurl("-d", "{}", `${base}/switchyard.testing.v1.TestingService/EmptyCall`);
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.match(text, /rpc_server_handled_total\{service="switchyard.testing.v1.TestingService",method="EmptyCall",protocol="grpc",code="OK"\} [1-9]/);
    assert.match(text, /rpc_server_handling_seconds_bucket\{.*method="EmptyCall"/);
  });
});
