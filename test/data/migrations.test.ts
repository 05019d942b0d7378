/**
 * Migrations: three processes starting together on an empty database apply
 * each migration once (the ledger fixture's 001 inserts a row, so a second
 * application would show); `npm run migrate` on an empty database applies
 * everything and, run again, nothing; a migration edited after it was
 * applied, or a badly named file, is refused with a message naming it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import postgres from "postgres";
import { migrate } from "../../platform/db/migrate.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { spawnLedger } from "./helpers.js";

const run = promisify(execFile);
let nats: OwnNats;
const dbs: { url: string; drop(): Promise<void> }[] = [];

before(async () => {
  nats = await startNats();
});

after(async () => {
  for (const d of dbs) await d.drop();
  await nats?.kill();
});

async function freshDb() {
  const d = await createTestDatabase("sy_migrate");
  dbs.push(d);
  return d.url;
}

test("three processes starting at once on an empty database apply each migration once", async () => {
  const url = await freshDb();
  const procs = await Promise.all([1, 2, 3].map(() => spawnLedger({ DATABASE_URL: url, NATS_URL: nats.url })));
  try {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    const rows = await sql<{ service: string; version: number; n: number }[]>`
      select service, version, count(*)::int as n from platform.migrations group by service, version order by service, version`;
    assert.deepEqual(
      rows.map((r) => `${r.service}/${r.version}:${r.n}`),
      ["ledger/1:1", "platform/1:1", "platform/2:1", "platform/3:1", "platform/4:1"],
    );
    assert.equal((await sql`select count(*)::int as n from ledger.seed`)[0]!.n, 1);
    await sql.end();
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
  }
});

test("npm run migrate applies everything to an empty database, then nothing", async () => {
  const url = await freshDb();
  const env = { ...process.env, DATABASE_URL: url };
  const first = await run("npm", ["run", "-s", "migrate"], { env });
  assert.match(first.stdout, /^migrate: applied platform\/001_outbox\.sql, platform\/002_processed_events\.sql, platform\/003_rate_limits\.sql/);
  const second = await run("npm", ["run", "-s", "migrate"], { env });
  assert.match(second.stdout, /^migrate: up to date, nothing to apply/);
});

test("an applied migration edited later, or a badly named file, stops migration naming the file", async () => {
  const url = await freshDb();
  const dir = mkdtempSync(join(tmpdir(), "sy-mig-"));
  const source = { service: "scratch", dir: pathToFileURL(`${dir}/`) };
  const sql = postgres(url, { max: 2, onnotice: () => {} });
  try {
    writeFileSync(join(dir, "001_first.sql"), "create table scratch.t (id int);");
    assert.deepEqual((await migrate(sql, [source])).map((f) => f.name).at(-1), "001_first.sql");
    writeFileSync(join(dir, "001_first.sql"), "create table scratch.t (id bigint);");
    await assert.rejects(migrate(sql, [source]), /migration scratch\/001_first\.sql was changed after it was applied; add a new migration instead/);
    writeFileSync(join(dir, "001_first.sql"), "create table scratch.t (id int);");
    writeFileSync(join(dir, "2_second.sql"), "select 1;");
    await assert.rejects(migrate(sql, [source]), /migration scratch\/2_second\.sql: name it NNN_name\.sql/);
  } finally {
    await sql.end();
  }
});
