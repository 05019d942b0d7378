/**
 * Graceful shutdown as a client sees it: SIGTERM while a slow unary call and a
 * long server stream are in flight. The unary call completes, the stream ends
 * with UNAVAILABLE (so its client reconnects elsewhere), new calls are
 * refused, and the process exits 0.
 */
import { it } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { grpcJsClient, unary } from "../support/platform-under-test.js";
import { spawnScript } from "../support/spawn.js";
import { waitFor } from "../support/wait.js";

it("SIGTERM: unary call completes, stream ends UNAVAILABLE, process exits 0", async () => {
  const { child, port, output } = await spawnScript("test/platform/fixtures/testing-server.ts", { stderr: "inherit" });
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  const client = grpcJsClient(TestingService, port);

  // A long stream: one message now, the next in 20 s.
  const stream = client.streamingOutputCall!({ responseParameters: [{ size: 1 }, { size: 1, intervalMs: 20_000 }] }) as grpc.ClientReadableStream<unknown>;
  const streamStatus = new Promise<grpc.StatusObject>((resolve) => stream.on("status", resolve));
  stream.on("error", () => {});
  await new Promise((resolve) => stream.once("data", resolve));

  // A slow unary call: answers after 1.5 s.
  const slow = unary<{ text: string }>(client, "unaryCall", { sleepMs: 1500, text: "finished" });
  await waitFor("the slow call to be running on the server", () => output().includes("unary started finished"));

  const signalledAt = Date.now();
  child.kill("SIGTERM");

  const status = await streamStatus;
  assert.equal(status.code, grpc.status.UNAVAILABLE, `stream ended with ${status.code} ${status.details}`);
  assert.match(status.details, /shutting down/);

  const { response, error } = await slow;
  assert.equal(error, undefined, `unary call failed: ${error?.message}`);
  assert.equal(response!.text, "finished");

  const [code, signal] = await exited;
  client.close();
  assert.equal(signal, null);
  assert.equal(code, 0);
  assert.ok(Date.now() - signalledAt < 30_000, "exited within 30 s");
});
