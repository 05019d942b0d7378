/**
 * PostgreSQL failover under a running process: DATABASE_URL lists the
 * primary and a streaming standby with target_session_attrs=read-write. The
 * primary stops; /readyz says not ready and storing RPCs answer UNAVAILABLE
 * meanwhile; the standby is promoted and the process follows it without a
 * restart (new connections go to the host that accepts writes).
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { startNats, startOwnPostgres, startOwnStandby, type OwnNats, type OwnPostgres, type OwnStandby } from "../support/infra.js";
import { startTraffic } from "../support/traffic.js";
import { readyz, testSettings, waitFor } from "./helpers.js";
import { ledgerModule } from "./fixtures/ledger.js";

let nats: OwnNats;
let primary: OwnPostgres;
let standby: OwnStandby;
let proc: RunningProcess;

before(async () => {
  [nats, primary] = await Promise.all([startNats(), startOwnPostgres()]);
  standby = await startOwnStandby(primary);
  const url = `postgres://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/postgres?target_session_attrs=read-write`;
  proc = await startProcess([ledgerModule({ consumer: "ledger-effects" })], testSettings({ DATABASE_URL: url, NATS_URL: nats.url }));
});

after(async () => {
  // Bounded, so a stop that hangs fails this file instead of stalling the suite (seen once in about five runs).
  let timer: NodeJS.Timeout | undefined;
  const stopped = await Promise.race([
    proc?.stop().then(() => true),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), 60_000))),
  ]);
  clearTimeout(timer);
  await standby?.stop();
  await primary?.stop();
  await nats?.kill();
  assert.ok(stopped !== false, "the process stopped within 60 s after the failover");
});

test("primary lost, standby promoted: not ready and UNAVAILABLE meanwhile, then served by the new primary without a restart", async () => {
  const client = createClient(TestingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${proc.port}` }));
  assert.equal((await client.unaryCall({ text: "before" }, { timeoutMs: 5000 })).text, "before");
  const traffic = startTraffic(client, 8);
  try {
    await waitFor("some traffic before the primary stops", () => traffic.ok() >= 30);
    await failOver(client);
  } finally {
    await traffic.stop();
  }
  const codes = traffic.codes;
  assert.deepEqual([...codes.keys()].filter((c) => c !== "ok" && c !== "Unavailable"), [], `only UNAVAILABLE failures: ${JSON.stringify([...codes])}`);
});

async function failOver(client: ReturnType<typeof createClient<typeof TestingService>>): Promise<void> {
  await primary.stop();
  await waitFor("/readyz to report PostgreSQL down", async () => {
    const r = await readyz(proc.port);
    return r.status === 503 && r.body.checks.postgres === false;
  });
  await assert.rejects(client.unaryCall({ text: "during" }, { timeoutMs: 3000 }), (err: unknown) => err instanceof ConnectError && err.code === Code.Unavailable);

  await standby.promote();
  await waitFor("/readyz to report ready on the promoted standby", async () => (await readyz(proc.port)).status === 200, 60_000);
  await waitFor("a storing RPC to succeed on the new primary", () => client.unaryCall({ text: "after" }, { timeoutMs: 5000 }).then((r) => r.text === "after", () => false), 60_000);
}
