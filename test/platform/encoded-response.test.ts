/**
 * A handler may return its response already encoded (encodedResponse, for
 * handlers that relay bytes they received): every protocol path answers the
 * same message as if the handler had returned it as an object.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TestingService, UnaryCallResponseSchema } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { encodedResponse, register } from "../../platform/index.js";
import { createLogger } from "../../platform/log.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { connectClients } from "../support/platform-under-test.js";

let proc: RunningProcess;
before(async () => {
  const settings = readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent" });
  const service = register(TestingService, {
    unaryCall: (req) =>
      encodedResponse(UnaryCallResponseSchema, toBinary(UnaryCallResponseSchema, create(UnaryCallResponseSchema, { text: req.text, echoedSize: 7, payload: { body: new Uint8Array([1, 2, 3]) } }))),
  });
  proc = await startProcess([{ name: "testing", summary: "testing", serves: [TestingService], start: () => ({ services: [service] }) }], settings, createLogger("silent"));
});
after(() => proc.stop());

test("an encoded response reaches gRPC, gRPC-Web and Connect (JSON) clients as the message it encodes", async () => {
  const expected = create(UnaryCallResponseSchema, { text: "héllo ☺", echoedSize: 7, payload: { body: new Uint8Array([1, 2, 3]) } });
  for (const [name, client] of Object.entries(connectClients(proc.port))) {
    const res = await client.unaryCall({ text: "héllo ☺" });
    assert.deepEqual(res, expected, name);
  }
});
