/**
 * A service whose RPCs are not built yet is still mounted: each of its RPCs
 * answers UNIMPLEMENTED with a message naming it, on every protocol path,
 * through the same middleware as a built one.
 */
import { after, before, it } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createLogger } from "../../platform/log.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { register } from "../../platform/rpc/pipeline.js";
import { readPlatformSettings } from "../../platform/settings.js";

let proc: RunningProcess;
before(async () => {
  proc = await startProcess(
    [{ name: "unbuilt", summary: "unbuilt", serves: [TestingService], start: () => ({ services: [register(TestingService, {})] }) }],
    readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent" }),
    createLogger("silent"),
  );
});
after(async () => {
  await proc.stop();
});

it("every RPC of an unbuilt service answers UNIMPLEMENTED on gRPC, gRPC-Web and Connect", async () => {
  const baseUrl = `http://127.0.0.1:${proc.port}`;
  for (const transport of [
    createGrpcTransport({ baseUrl }),
    createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
    createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  ]) {
    const client = createClient(TestingService, transport);
    const unary = await client.unaryCall({}).then(() => undefined, (e: unknown) => ConnectError.from(e));
    assert.equal(unary?.code, Code.Unimplemented);
    assert.match(unary!.rawMessage, /switchyard\.testing\.v1\.TestingService\/UnaryCall is not implemented yet/);
    const stream = await (async () => {
      for await (const _ of client.streamingOutputCall({})) void _;
    })().then(() => undefined, (e: unknown) => ConnectError.from(e));
    assert.equal(stream?.code, Code.Unimplemented);
  }
});
