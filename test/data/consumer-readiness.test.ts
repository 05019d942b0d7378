/**
 * A consumer whose loop dies (here: its durable consumer is deleted from
 * JetStream under it) turns `/readyz` false, naming the consumer, so an
 * orchestrator restarts the instance instead of leaving events unhandled.
 */
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { after, before, test } from "node:test";
import { UserLoggedInSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { EVENTS_STREAM } from "../../platform/events/streams.js";
import { createLogger } from "../../platform/log.js";
import { connectNats } from "../../platform/nats/connection.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { readyz, testSettings, waitFor } from "./helpers.js";

let nats: OwnNats;
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let proc: RunningProcess;
const durable = "readiness-probe";

before(async () => {
  nats = await startNats();
  db = await createTestDatabase("sy_consumer_ready");
  proc = await startProcess(
    [
      {
        name: "listener",
        summary: "consumes events",
        serves: [],
        uses: ["events"],
        start: async (ctx) => {
          const stop = await ctx.events.consume({ schema: UserLoggedInSchema, durable, handle: async () => {} });
          return { services: [], stop };
        },
      },
    ],
    testSettings({ DATABASE_URL: db.url, NATS_URL: nats.url, RATE_LIMIT_ENABLED: "false" }),
    createLogger("silent"),
  );
});
after(async () => {
  await proc?.stop();
  await db?.drop();
  await nats?.kill();
});

test("a consumer whose loop died turns /readyz false, naming it", async () => {
  const check = `consumer:${durable}`;
  const before = await readyz(proc.port);
  assert.equal(before.status, 200);
  assert.equal(before.body.checks[check], true);

  const nc = await connectNats(nats.url, createLogger("silent"));
  try {
    await (await jetstreamManager(nc)).consumers.delete(EVENTS_STREAM, durable);
  } finally {
    await nc.close();
  }
  const after = await waitFor("/readyz to turn false", async () => {
    const r = await readyz(proc.port);
    return r.status === 503 ? r : undefined;
  });
  assert.equal(after.body.ready, false);
  assert.equal(after.body.checks[check], false);
  assert.equal(after.body.checks.postgres, true);
  assert.equal(after.body.checks.nats, true);
});
