/**
 * Rows the relay does not get handed at commit reach JetStream on
 * PostgreSQL's notification, not on the poll: an event committed by another
 * process that runs no relay, and one written in `sql.begin` (no commit
 * hook), are both consumed while the only relay's poll is ten minutes away.
 */
import { create } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { UserLoggedInSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { createDatabase } from "../../platform/db/database.js";
import { migrate } from "../../platform/db/migrate.js";
import type { Database } from "../../platform/db/types.js";
import { createEventBus, type EventBus } from "../../platform/events/events.js";
import { createLogger } from "../../platform/log.js";
import { connectNats } from "../../platform/nats/connection.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { spawnScript } from "../support/spawn.js";
import { waitFor } from "./helpers.js";

const log = createLogger("silent");
let nats: OwnNats;
let dbHandle: { url: string; drop(): Promise<void> };
let db: Database;
let nc: Awaited<ReturnType<typeof connectNats>>;
let bus: EventBus;
const consumed: string[] = [];

before(async () => {
  nats = await startNats();
  dbHandle = await createTestDatabase("sy_outbox_notify");
  db = createDatabase(dbHandle.url);
  await migrate(db.sql, []);
  nc = await connectNats(nats.url, log);
  // The relay's first pass runs at start; the next poll would come in 10 minutes.
  bus = await createEventBus({ db, nc, log, relay: { pollMs: 600_000 } });
  await bus.consume({ schema: UserLoggedInSchema, durable: "notify-test", handle: async (event) => void consumed.push(event.userId) });
});

after(async () => {
  await bus?.stop();
  await nc?.close();
  await db?.close();
  await dbHandle?.drop();
  await nats?.kill();
});

test("an event committed by a process without a relay is relayed here on its notification", async () => {
  // crash-publisher with STAGE=commit runs no relay: it commits one event and waits.
  const child = await spawnScript("test/data/fixtures/crash-publisher.ts", {
    env: { DATABASE_URL: dbHandle.url, NATS_URL: nats.url, STAGE: "commit" },
    ready: /at commit/,
  });
  try {
    await waitFor("the other process's event to be consumed here", () => consumed.includes("crash-victim"), 20_000);
  } finally {
    await child.stop();
  }
});

test("an event written in sql.begin (no commit hook) is relayed on its notification", async () => {
  await db.sql.begin((tx) => bus.publish(tx, UserLoggedInSchema, create(UserLoggedInSchema, { userId: "in-sql-begin" })));
  await waitFor("the event to be consumed", () => consumed.includes("in-sql-begin"), 20_000);
  assert.equal(consumed.filter((u) => u === "in-sql-begin").length, 1);
});
