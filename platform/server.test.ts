/** The server's decisions that need no socket: which protocol a connection speaks, what /readyz says. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkReadiness, sniffProtocol } from "./server.js";

test("the HTTP/2 preface goes to gRPC, a prefix of it waits, anything else is HTTP/1.1", () => {
  assert.equal(sniffProtocol(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")), "h2");
  assert.equal(sniffProtocol(Buffer.from("PRI * HTTP/2.0")), "h2");
  assert.equal(sniffProtocol(Buffer.from("PRI *")), "wait");
  assert.equal(sniffProtocol(Buffer.from("")), "wait");
  assert.equal(sniffProtocol(Buffer.from("GET / HTTP/1.1\r\n")), "h1");
  assert.equal(sniffProtocol(Buffer.from("PRX")), "h1");
});

test("readiness: every probe named; one false, throwing or rejecting makes it not ready; shutdown too", async () => {
  const ok = await checkReadiness({ postgres: () => true, nats: async () => true }, false);
  assert.deepEqual(ok, { ready: true, shuttingDown: false, checks: { postgres: true, nats: true } });
  const bad = await checkReadiness(
    {
      postgres: () => true,
      "consumer:x": () => false,
      throws: () => {
        throw new Error("no");
      },
      rejects: () => Promise.reject(new Error("no")),
    },
    false,
  );
  assert.deepEqual(bad, { ready: false, shuttingDown: false, checks: { postgres: true, "consumer:x": false, throws: false, rejects: false } });
  assert.equal((await checkReadiness({}, true)).ready, false);
});
