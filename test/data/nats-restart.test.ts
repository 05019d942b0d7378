/**
 * nats-server SIGKILLed and restarted on the same store while RPCs keep
 * committing events: RPCs that need NATS answer UNAVAILABLE meanwhile (not a
 * hang), /readyz says not ready, RPCs that only need PostgreSQL keep working,
 * and after the restart the same process (no restart of its own) is ready
 * again and every acknowledged event is consumed exactly once.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { readyz, testSettings, waitFor } from "./helpers.js";
import { ledgerModule } from "./fixtures/ledger.js";
import postgres from "postgres";

let nats: OwnNats;
let dbHandle: { url: string; drop(): Promise<void> };
let proc: RunningProcess;

before(async () => {
  nats = await startNats();
  dbHandle = await createTestDatabase("sy_natsrestart");
  proc = await startProcess([ledgerModule({ consumer: "ledger-effects" })], testSettings({ DATABASE_URL: dbHandle.url, NATS_URL: nats.url }));
});

after(async () => {
  await proc?.stop();
  await dbHandle?.drop();
  await nats?.kill();
});

test("nats-server killed and restarted mid-traffic: UNAVAILABLE meanwhile, no acknowledged event lost or doubled, recovery without restart", async () => {
  const client = createClient(TestingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${proc.port}` }));
  const sql = postgres(dbHandle.url, { max: 1, onnotice: () => {} });
  try {
    await client.emptyCall({}, { timeoutMs: 5000 });
    let acknowledged = 0;
    let running = true;
    const traffic = (async () => {
      for (let i = 0; running; i++) {
        await client.unaryCall({ text: `entry ${i}` }, { timeoutMs: 5000 });
        acknowledged++;
      }
    })();
    await waitFor("some traffic before the kill", () => acknowledged >= 40);

    await nats.kill("SIGKILL");
    const down = await waitFor("/readyz to report NATS down", async () => {
      const r = await readyz(proc.port);
      return r.status === 503 && r.body.checks.nats === false ? r : undefined;
    });
    assert.equal(down.body.checks.postgres, true);
    await assert.rejects(
      client.emptyCall({}, { timeoutMs: 10_000 }),
      (err: unknown) => err instanceof ConnectError && err.code === Code.Unavailable && /message bus is unavailable/.test(err.message),
    );
    // Committing events needs only PostgreSQL: the outbox keeps them.
    const atKill = acknowledged;
    await waitFor("RPCs that store to keep succeeding while NATS is down", () => acknowledged >= atKill + 20);

    await nats.start();
    await waitFor("/readyz to report ready again", async () => (await readyz(proc.port)).status === 200);
    await waitFor("an RPC needing NATS to succeed again", () => client.emptyCall({}, { timeoutMs: 5000 }).then(() => true));
    running = false;
    await traffic;

    await waitFor(
      `all ${acknowledged} acknowledged events to be consumed`,
      async () => Number((await sql`select count(distinct event_id)::int as n from ledger.effects`)[0]!.n) === acknowledged,
      30_000,
    );
    const [counts] = await sql`
      select count(*)::int as effects, count(distinct event_id)::int as events,
             (select count(*)::int from ledger.entries) as entries,
             (select count(*)::int from ledger.entries e where not exists (select 1 from ledger.effects f where f.event_id = e.event_id::text)) as missing
        from ledger.effects`;
    assert.deepEqual(counts, { effects: acknowledged, events: acknowledged, entries: acknowledged, missing: 0 });
  } finally {
    await sql.end();
  }
});
