/**
 * A module that fails to start (a bad variable of its own, a key it cannot
 * read) stops the whole start, and what was already started is stopped
 * again: the modules started before it, and the shared infrastructure (here
 * the PostgreSQL pool, seen from the server's side in pg_stat_activity).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, before, it } from "node:test";
import postgres from "postgres";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { ConfigError } from "../../platform/config.js";
import { createLogger } from "../../platform/log.js";
import { startProcess } from "../../platform/process.js";
import { register } from "../../platform/rpc/pipeline.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { createTestDatabase } from "../support/infra.js";

let testDb: Awaited<ReturnType<typeof createTestDatabase>>;
let sql: postgres.Sql;
before(async () => {
  testDb = await createTestDatabase("sy_start_failure");
  sql = postgres(testDb.url, { max: 1, onnotice: () => {} });
});
after(async () => {
  await sql.end();
  await testDb.drop();
});

it("a module failing at start: the start rejects with its error, earlier modules are stopped, the pool is closed", async () => {
  const instance = `start-failure-${randomBytes(3).toString("hex")}`;
  let stopped = 0;
  const start = startProcess(
    [
      { name: "first", summary: "starts", serves: [TestingService], uses: ["db"], start: () => ({ services: [register(TestingService, {})], stop: async () => void stopped++ }) },
      {
        name: "second",
        summary: "fails to start",
        serves: [],
        uses: ["db"],
        start: async (ctx) => {
          await ctx.db.sql`select 1`; // the pool is in use when the start fails
          throw new ConfigError(["SECOND_VAR: must be a number"]);
        },
      },
    ],
    readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", DATABASE_URL: testDb.url, INSTANCE_ID: instance, RATE_LIMIT_ENABLED: "false" }),
    createLogger("silent"),
  );
  await assert.rejects(start, (e: unknown) => e instanceof ConfigError && /SECOND_VAR/.test(e.message));
  assert.equal(stopped, 1, "the module started before the failing one was not stopped");
  const open = await sql<{ n: number }[]>`
    select count(*)::int as n from pg_stat_activity where application_name = ${`switchyard-${instance}`}`;
  assert.equal(open[0]!.n, 0, "the failed start left its database connections open");
});

it("a module registering a service it did not declare stops the start, naming the module and the service", async () => {
  let stopped = 0;
  const start = startProcess(
    [{ name: "sneaky", summary: "serves more than it says", serves: [], start: () => ({ services: [register(TestingService, {})], stop: async () => void stopped++ }) }],
    readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", RATE_LIMIT_ENABLED: "false" }),
    createLogger("silent"),
  );
  await assert.rejects(start, /module "sneaky" registers switchyard\.testing\.v1\.TestingService, which it does not declare in `serves`/);
  assert.equal(stopped, 1, "the module was stopped again");
});

it("SERVICES naming a module the catalogue does not have stops `npm start` with exit 2, naming SERVICES and the known modules", () => {
  const r = spawnSync(process.execPath, ["--import", "tsx", "app/main.ts"], { env: { ...process.env, SERVICES: "auth,inventory", PORT: "0" }, encoding: "utf8", timeout: 120_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /SERVICES: unknown service "inventory"; known: auth, gateway, chat/);
});
