/**
 * Consumers: a handler slower than its ack wait causes its side effect once
 * (across two replicas of the consumer); a poison message lands in the
 * dead-letter stream after the maximum deliveries with its error, headers
 * and delivery count, the events after it are consumed, and
 * `npm run dlq -- list` / `replay <id>` show and replay it, to the consumer
 * that gave up only; a burst queued up behind a busy handler is consumed to
 * its last event.
 */
import { create } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { UserLoggedInSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { createDatabase } from "../../platform/db/database.js";
import { migrate } from "../../platform/db/migrate.js";
import type { Database } from "../../platform/db/types.js";
import { listDeadLetters } from "../../platform/events/dlq.js";
import { createEventBus, type EventBus } from "../../platform/events/events.js";
import { createLogger } from "../../platform/log.js";
import { connectNats } from "../../platform/nats/connection.js";
import { jetstreamManager } from "@nats-io/jetstream";
import { requestContextFrom, runWithRequest, traceparentOf } from "../../platform/request-context.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { waitFor } from "./helpers.js";

const run = promisify(execFile);
const log = createLogger("silent");
let nats: OwnNats;
let dbHandle: { url: string; drop(): Promise<void> };
const dbs: Database[] = [];
const conns: Awaited<ReturnType<typeof connectNats>>[] = [];
const buses: EventBus[] = [];

/** One replica: its own pool, NATS connection and bus, as a separate process would have. */
async function replica(): Promise<{ db: Database; bus: EventBus }> {
  const db = createDatabase(dbHandle.url);
  const nc = await connectNats(nats.url, log);
  const bus = await createEventBus({ db, nc, log });
  dbs.push(db);
  conns.push(nc);
  buses.push(bus);
  return { db, bus };
}

let main: { db: Database; bus: EventBus };

before(async () => {
  nats = await startNats();
  dbHandle = await createTestDatabase("sy_consumer");
  const setup = createDatabase(dbHandle.url);
  await migrate(setup.sql, []);
  await setup.sql`create table public.effects (consumer text not null, event_id text not null, user_id text not null)`;
  await setup.close();
  main = await replica();
});

after(async () => {
  for (const b of buses) await b.stop();
  for (const nc of conns) await nc.close();
  for (const db of dbs) await db.close();
  await dbHandle?.drop();
  await nats?.kill();
});

const publish = (userId: string) => main.db.tx((tx) => main.bus.publish(tx, UserLoggedInSchema, create(UserLoggedInSchema, { userId })));
const effects = async (consumer: string, userId: string) =>
  Number((await main.db.sql`select count(*)::int as n from public.effects where consumer = ${consumer} and user_id = ${userId}`)[0]!.n);

describe("consumers", () => {
  test("a handler slower than its ack wait causes its side effect once, whether it then fails or succeeds", async () => {
    const attempts = new Map<string, number>();
    const handler = async (event: { userId: string }, meta: { eventId: string; deliveryCount: number }, tx: Parameters<Parameters<Database["tx"]>[0]>[0]) => {
      attempts.set(event.userId, (attempts.get(event.userId) ?? 0) + 1);
      await tx`insert into public.effects (consumer, event_id, user_id) values ('slow', ${meta.eventId}, ${event.userId})`;
      if (meta.deliveryCount === 1) {
        // Outlive the ack wait: JetStream redelivers meanwhile.
        await sleep(2500);
        if (event.userId === "slow-fail") throw new Error("failed late");
      }
    };
    const other = await replica();
    const opts = { schema: UserLoggedInSchema, durable: "slow", ackWaitMs: 1000, maxDeliver: 5, backoffMs: [100], handle: handler };
    const stops = [await main.bus.consume(opts), await other.bus.consume(opts)];
    await publish("slow-fail");
    await publish("slow-ok");
    await waitFor("both slow events handled", async () => (await effects("slow", "slow-fail")) === 1 && (await effects("slow", "slow-ok")) === 1);
    await waitFor("a redelivery of each", () => (attempts.get("slow-fail") ?? 0) >= 2 && (attempts.get("slow-ok") ?? 0) >= 1);
    await waitFor("the consumer to have nothing pending", async () => {
      const jsm = await jetstreamManager(conns[0]!);
      const info = await jsm.consumers.info("EVENTS", "slow");
      return info.num_ack_pending === 0 && info.num_pending === 0;
    });
    assert.equal(await effects("slow", "slow-fail"), 1);
    assert.equal(await effects("slow", "slow-ok"), 1);
    for (const stop of stops) await stop();
  });

  test("a burst that queues up while the handler is busy is consumed to its last event, without waiting for redelivery", async () => {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let entered = false;
    const stop = await main.bus.consume({
      schema: UserLoggedInSchema,
      durable: "burst",
      concurrency: 1,
      batchSize: 8,
      ackWaitMs: 600_000, // a redelivery must not be what finishes the burst
      handle: async (event, meta, tx) => {
        if (event.userId === "burst-gate") {
          entered = true;
          await gate;
        }
        await tx`insert into public.effects (consumer, event_id, user_id) values ('burst', ${meta.eventId}, ${event.userId})`;
      },
    });
    const jsm = await jetstreamManager(conns[0]!);
    // The durable starts with the earlier tests' events: let it catch up first.
    await waitFor("the burst consumer to catch up", async () => {
      const info = await jsm.consumers.info("EVENTS", "burst");
      return info.num_ack_pending === 0 && info.num_pending === 0;
    });
    const users = Array.from({ length: 20 }, (_, i) => `burst-${i}`);
    try {
      await publish("burst-gate");
      await waitFor("the handler to hold the first event", () => entered);
      for (const u of users) await publish(u);
      // At least the client's first pull of 8 is in its hands while the only handler is busy.
      await waitFor("a full pull delivered to the busy consumer", async () => (await jsm.consumers.info("EVENTS", "burst")).num_ack_pending >= 8);
    } finally {
      open();
    }
    await waitFor("every event of the burst to be handled", async () => {
      const [row] = await main.db.sql`select count(distinct user_id)::int as n from public.effects where consumer = 'burst' and user_id like 'burst-%'`;
      return row!.n === users.length + 1;
    });
    for (const u of users) assert.equal(await effects("burst", u), 1, u);
    await stop();
  });

  test("a poison message is dead-lettered with its error after max deliveries; later events flow; replay reaches only the consumer that gave up", async () => {
    let poisonFixed = false;
    const picky = {
      schema: UserLoggedInSchema,
      durable: "picky",
      maxDeliver: 3,
      backoffMs: [50, 100],
      concurrency: 1,
      handle: async (event: { userId: string }, meta: { eventId: string }, tx: Parameters<Parameters<Database["tx"]>[0]>[0]) => {
        if (event.userId === "poison" && !poisonFixed) throw new Error(`cannot handle user ${event.userId}: no such plan`);
        await tx`insert into public.effects (consumer, event_id, user_id) values ('picky', ${meta.eventId}, ${event.userId})`;
      },
    };
    const easy = {
      schema: UserLoggedInSchema,
      durable: "easy",
      handle: async (event: { userId: string }, meta: { eventId: string }, tx: Parameters<Parameters<Database["tx"]>[0]>[0]) => {
        await tx`insert into public.effects (consumer, event_id, user_id) values ('easy', ${meta.eventId}, ${event.userId})`;
      },
    };
    const stops = [await main.bus.consume(picky), await main.bus.consume(easy)];
    const trace = requestContextFrom(() => null, undefined);
    await publish("before-poison");
    const poisonId = await runWithRequest(trace, () => publish("poison"));
    for (const u of ["after-1", "after-2", "after-3"]) await publish(u);

    await waitFor("the events after the poison to be consumed", async () => {
      for (const u of ["before-poison", "after-1", "after-2", "after-3"]) if ((await effects("picky", u)) !== 1) return false;
      return true;
    });
    const jsm = await jetstreamManager(conns[0]!);
    const letters = await waitFor("the dead letter", async () => {
      const l = await listDeadLetters(jsm);
      return l.length === 1 ? l : undefined;
    });
    const letter = letters[0]!;
    assert.equal(letter.eventId, poisonId);
    assert.equal(letter.consumer, "picky");
    assert.equal(letter.subject, "events.auth.user_logged_in");
    assert.equal(letter.eventType, "switchyard.events.v1.UserLoggedIn");
    assert.equal(letter.deliveries, 3);
    assert.equal(letter.error, "cannot handle user poison: no such plan");
    assert.equal(letter.traceparent, traceparentOf(trace));
    assert.equal(await effects("picky", "poison"), 0);
    await waitFor("the easy consumer to handle the poison event", async () => (await effects("easy", "poison")) === 1);

    const env = { ...process.env, NATS_URL: nats.url };
    const listed = await run(process.execPath, ["--import", "tsx", "scripts/dlq.ts", "list"], { env });
    assert.match(listed.stdout, new RegExp(`^${letter.id}\\t.*\\tpicky\\tevents\\.auth\\.user_logged_in\\tevent ${poisonId}\\t3 deliveries\\tcannot handle user poison: no such plan$`, "m"));

    poisonFixed = true;
    const replayed = await run(process.execPath, ["--import", "tsx", "scripts/dlq.ts", "replay", String(letter.id)], { env });
    assert.match(replayed.stdout, new RegExp(`replayed dead letter ${letter.id}: event ${poisonId}`));
    await waitFor("the replayed event to be handled by picky", async () => (await effects("picky", "poison")) === 1);
    // "easy" sees the replay too and skips it by event id: still one effect once it has caught up.
    await waitFor("easy to catch up", async () => {
      const info = await jsm.consumers.info("EVENTS", "easy");
      return info.num_ack_pending === 0 && info.num_pending === 0;
    });
    assert.equal(await effects("easy", "poison"), 1);
    assert.deepEqual(await listDeadLetters(jsm), []);

    const missing = await run(process.execPath, ["--import", "tsx", "scripts/dlq.ts", "replay", "999"], { env }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((missing as { code: number }).code, 1);
    assert.match((missing as { stderr: string }).stderr, /no dead letter with id 999/);
    for (const stop of stops) await stop();
  });
});
