/**
 * PostgreSQL stopped and started again under a running process: /readyz says
 * not ready meanwhile, RPCs that store answer UNAVAILABLE within their
 * deadline (not DEADLINE_EXCEEDED, not INTERNAL), RPCs that need only NATS
 * keep working, and the pool recovers without restarting the process.
 * Traffic keeps flowing while the server goes away, so connections die
 * mid-transaction: every failure must be UNAVAILABLE and the process must not
 * fall over (`postgres` 3.4.9 crashes there unless the postinstall guard for
 * porsager/postgres#1208 is applied).
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { startNats, startOwnPostgres, type OwnNats, type OwnPostgres } from "../support/infra.js";
import { startTraffic } from "../support/traffic.js";
import { readyz, testSettings, waitFor } from "./helpers.js";
import { ledgerModule } from "./fixtures/ledger.js";

let nats: OwnNats;
let pg: OwnPostgres;
let proc: RunningProcess;

before(async () => {
  [nats, pg] = await Promise.all([startNats(), startOwnPostgres()]);
  proc = await startProcess([ledgerModule({ consumer: "ledger-effects" })], testSettings({ DATABASE_URL: pg.url, NATS_URL: nats.url }));
});

after(async () => {
  await proc?.stop();
  await pg?.stop();
  await nats?.kill();
});

test("PostgreSQL restarted: not ready and UNAVAILABLE within the deadline meanwhile; the pool recovers", async () => {
  const client = createClient(TestingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${proc.port}` }));
  assert.equal((await client.unaryCall({ text: "before" }, { timeoutMs: 5000 })).text, "before");
  assert.equal((await readyz(proc.port)).status, 200);

  const traffic = startTraffic(client, 16);
  await waitFor("some traffic before the stop", () => traffic.ok() >= 50);

  await pg.stop();
  const down = await waitFor("/readyz to report PostgreSQL down", async () => {
    const r = await readyz(proc.port);
    return r.status === 503 && r.body.checks.postgres === false ? r : undefined;
  });
  assert.equal(down.body.checks.nats, true);
  for (let i = 0; i < 3; i++) {
    await assert.rejects(
      client.unaryCall({ text: `during ${i}` }, { timeoutMs: 3000 }),
      (err: unknown) => err instanceof ConnectError && err.code === Code.Unavailable && /database is unavailable|did not answer/.test(err.message),
    );
  }
  // NATS-only RPCs are unaffected.
  await client.emptyCall({}, { timeoutMs: 5000 });

  await pg.start();
  await waitFor("/readyz to report ready again", async () => (await readyz(proc.port)).status === 200);
  await traffic.stop();
  const codes = traffic.codes;
  assert.deepEqual([...codes.keys()].filter((c) => c !== "ok" && c !== "Unavailable"), [], `only UNAVAILABLE failures: ${JSON.stringify([...codes])}`);
  await waitFor("a storing RPC to succeed again", () => client.unaryCall({ text: "after" }, { timeoutMs: 5000 }).then((r) => r.text === "after"));
});
