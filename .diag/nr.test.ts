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
import { TestingService } from "../gen/switchyard/testing/v1/testing_pb.js";
import { startProcess, type RunningProcess } from "../platform/process.js";
import { createTestDatabase, startNats, type OwnNats } from "../test/support/infra.js";
import { readyz, testSettings, waitFor } from "../test/data/helpers.js";
import { ledgerModule } from "../test/data/fixtures/ledger.js";
import postgres from "postgres";

let nats: OwnNats;
const T0 = Date.now();
const T = (l: string) => console.log("DIAG", l, Date.now() - T0);
let dbHandle: { url: string; drop(): Promise<void> };
let proc: RunningProcess;

before(async () => {
  nats = await startNats();
  dbHandle = await createTestDatabase("sy_natsrestart");
  proc = await startProcess([ledgerModule({ consumer: "ledger-effects" })], testSettings({ DATABASE_URL: dbHandle.url, NATS_URL: nats.url, LOG_LEVEL: process.env.DIAG_LOG ?? "silent" }));
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
    T("w"); await waitFor("some traffic before the kill", () => acknowledged >= 40);

    T("kill"); await nats.kill("SIGKILL");
    T("w"); const down = await waitFor("/readyz to report NATS down", async () => {
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
    T("w"); await waitFor("RPCs that store to keep succeeding while NATS is down", () => acknowledged >= atKill + 20);

    T("start"); await nats.start(); T("started");
    T("w"); await waitFor("/readyz to report ready again", async () => (await readyz(proc.port)).status === 200);
    T("w"); await waitFor("an RPC needing NATS to succeed again", () => client.emptyCall({}, { timeoutMs: 5000 }).then(() => true));
    running = false;
    await traffic;

    try {
    T("w"); await waitFor(
      `all ${acknowledged} acknowledged events to be consumed`,
      async () => Number((await sql`select count(distinct event_id)::int as n from ledger.effects`)[0]!.n) === acknowledged,
      30_000,
    );
    } catch (e) {
      const ob = await sql`select count(*) filter (where sent_at is null)::int as unsent, count(*) filter (where sent_at is not null)::int as sent, count(*) filter (where claimed_until is not null)::int as claimed from platform.outbox`;
      const pe = await sql`select count(*)::int as n from platform.processed_events`;
      const ef = await sql`select count(*)::int as n from ledger.effects`;
      console.log("DIAG acknowledged", acknowledged, "outbox", ob[0], "processed", pe[0], "effects", ef[0]);
      const { connect } = await import("@nats-io/transport-node");
      const { jetstreamManager } = await import("@nats-io/jetstream");
      const nc = await connect({ servers: nats.url });
      const jsm = await jetstreamManager(nc);
      const si = await jsm.streams.info("EVENTS");
      console.log("DIAG stream", JSON.stringify(si.state));
      const ci = await jsm.consumers.info("EVENTS", "ledger-effects");
      console.log("DIAG consumer", JSON.stringify({ delivered: ci.delivered, ack_floor: ci.ack_floor, num_ack_pending: ci.num_ack_pending, num_redelivered: ci.num_redelivered, num_waiting: ci.num_waiting, num_pending: ci.num_pending }));
      await nc.close();
      throw e;
    }
    T("consumed"); const [counts] = await sql`
      select count(*)::int as effects, count(distinct event_id)::int as events,
             (select count(*)::int from ledger.entries) as entries,
             (select count(*)::int from ledger.entries e where not exists (select 1 from ledger.effects f where f.event_id = e.event_id::text)) as missing
        from ledger.effects`;
    assert.deepEqual(counts, { effects: acknowledged, events: acknowledged, entries: acknowledged, missing: 0 });
  } finally {
    await sql.end();
  }
});
