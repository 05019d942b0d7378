/**
 * `npm start` without DATABASE_URL / NATS_URL: the embedded PostgreSQL
 * (PGlite through a loopback socket) serves the same client, keeps its data
 * under DATA_DIR across restarts, has pgvector, and is shared with
 * `npm run migrate` while the process runs; a local nats-server is started
 * when none listens, and without one on PATH the message says how to get one.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import postgres from "postgres";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { ensureEventStreams } from "../../platform/events/streams.js";
import { ensureLocalNats, NoNatsServerError } from "../../platform/nats/local-server.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { freePort, startNats, type OwnNats } from "../support/infra.js";
import { testSettings, waitFor } from "./helpers.js";
import { ledgerModule } from "./fixtures/ledger.js";

const run = promisify(execFile);
let nats: OwnNats;
const dataDir = mkdtempSync(join(tmpdir(), "sy-dev-"));

before(async () => {
  nats = await startNats();
});
after(async () => {
  await nats?.kill();
});

const start = () => startProcess([ledgerModule({ consumer: "ledger-effects" })], testSettings({ DATA_DIR: dataDir, NATS_URL: nats.url }));
const embeddedUrl = () => (JSON.parse(readFileSync(join(dataDir, "pg.lock.json"), "utf8")) as { url: string }).url;

test("with DATABASE_URL unset: PGlite serves the process, with pgvector, shared with npm run migrate, and its data survives a restart", async () => {
  let proc: RunningProcess = await start();
  try {
    const client = createClient(TestingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${proc.port}` }));
    await client.unaryCall({ text: "kept" }, { timeoutMs: 10_000 });
    const sql = postgres(embeddedUrl(), { max: 2, onnotice: () => {} });
    try {
      await waitFor("the event to be consumed", async () => (await sql`select count(*)::int as n from ledger.effects`)[0]!.n === 1);
      await sql`create extension if not exists vector`;
      const [{ d }] = (await sql`select ('[1,2,3]'::vector <-> '[1,2,5]'::vector)::float8 as d`) as unknown as [{ d: number }];
      assert.equal(d, 2);
    } finally {
      await sql.end();
    }
    const migrated = await run("npm", ["run", "-s", "migrate"], { env: { ...process.env, DATA_DIR: dataDir, DATABASE_URL: "" } });
    // Same database as the running process: the platform's migrations are already there (services' may not be).
    assert.match(migrated.stdout, /^migrate: /);
    assert.doesNotMatch(migrated.stdout, /platform\//);
  } finally {
    await proc.stop();
  }

  proc = await start();
  try {
    const sql = postgres(embeddedUrl(), { max: 1, onnotice: () => {} });
    try {
      assert.deepEqual((await sql`select text from ledger.entries`).map((r) => r.text), ["kept"]);
      assert.equal((await sql`select count(*)::int as n from ledger.seed`)[0]!.n, 1, "migrations were not applied again");
    } finally {
      await sql.end();
    }
  } finally {
    await proc.stop();
  }
});

test("with NATS_URL unset: a local nats-server with JetStream is started where none listens", async () => {
  const port = await freePort();
  const local = await ensureLocalNats(join(dataDir, "nats"), { port });
  assert.ok(local, "a server was started");
  try {
    const nc = await connect({ servers: local.url });
    await ensureEventStreams(await jetstreamManager(nc));
    await nc.close();
    assert.equal(await ensureLocalNats(join(dataDir, "nats"), { port }), undefined, "one already listens: none started");
  } finally {
    await local.stop();
  }
  const other = await freePort();
  await assert.rejects(ensureLocalNats(join(dataDir, "nats2"), { port: other, searchPath: "/nonexistent" }), (err: unknown) => {
    assert.ok(err instanceof NoNatsServerError);
    assert.match(err.message, new RegExp(`nothing listens on nats://127\\.0\\.0\\.1:${other} and nats-server is not on PATH`));
    assert.match(err.message, /apt-get install nats-server/);
    assert.match(err.message, /set NATS_URL/);
    return true;
  });
});
