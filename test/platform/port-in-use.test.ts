/**
 * A port already in use: the start fails naming the port, and what was
 * started before the listen (the modules, the PostgreSQL pool, the NATS
 * connection) is stopped again, seen from PostgreSQL's side in
 * pg_stat_activity. `npm start` on such a port exits non-zero saying so.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { after, before, it } from "node:test";
import type { NatsConnection } from "@nats-io/nats-core";
import postgres from "postgres";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createLogger } from "../../platform/log.js";
import { startProcess } from "../../platform/process.js";
import { register } from "../../platform/rpc/pipeline.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { startCommand } from "../edge/npm-start.js";
import { createTestDatabase, natsUrl } from "../support/infra.js";

let testDb: Awaited<ReturnType<typeof createTestDatabase>>;
let sql: postgres.Sql;
let taken: net.Server;
let port: number;
before(async () => {
  testDb = await createTestDatabase("sy_port_in_use");
  sql = postgres(testDb.url, { max: 1, onnotice: () => {} });
  taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
  port = (taken.address() as net.AddressInfo).port;
});
after(async () => {
  await new Promise((resolve) => taken.close(resolve));
  await sql.end();
  await testDb.drop();
});

const openConnections = async (instance: string) =>
  (await sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = ${`switchyard-${instance}`}`)[0]!.n;

it("in process: the start rejects naming the port, and the modules, pool and NATS connection are closed", async () => {
  const instance = `port-in-use-${randomBytes(3).toString("hex")}`;
  let stopped = 0;
  let nats: NatsConnection | undefined;
  const start = startProcess(
    [
      {
        name: "testing",
        summary: "holds a connection",
        serves: [TestingService],
        uses: ["events"],
        start: async (ctx) => {
          await ctx.db.sql`select 1`; // the pool holds a connection when the listen fails
          nats = ctx.nats;
          return { services: [register(TestingService, {})], stop: async () => void stopped++ };
        },
      },
    ],
    readPlatformSettings({
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_LEVEL: "silent",
      DATABASE_URL: testDb.url,
      NATS_URL: await natsUrl(),
      INSTANCE_ID: instance,
    }),
    createLogger("silent"),
  );
  await assert.rejects(start, (e: Error) => e.message.includes(`port ${port} is already in use`));
  assert.equal(stopped, 1, "the started module was not stopped");
  assert.equal(nats?.isClosed(), true, "the NATS connection was left open");
  assert.equal(await openConnections(instance), 0, "the failed start left its database connections open");
});

it("npm start on a port in use exits non-zero naming the port", async () => {
  const instance = `port-in-use-${randomBytes(3).toString("hex")}`;
  const env = {
    ...process.env,
    PORT: String(port),
    HOST: "127.0.0.1",
    SERVICES: "auth",
    DATABASE_URL: testDb.url,
    NATS_URL: await natsUrl(),
    AUTH_MASTER_KEY: randomBytes(32).toString("base64"),
    INSTANCE_ID: instance,
    LOG_LEVEL: "warn",
  };
  const child = spawn(process.execPath, startCommand(), { env, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  assert.notEqual(code, 0);
  assert.match(stderr, new RegExp(`port ${port} is already in use`));
  assert.equal(await openConnections(instance), 0);
});
