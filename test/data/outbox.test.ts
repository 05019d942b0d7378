/**
 * The outbox: an event written in a transaction is published after commit on
 * the subject its contract names, with its trace context, and consumed once;
 * a rolled-back transaction publishes nothing; bad event fields are refused;
 * and a process SIGKILLed anywhere between commit and marking the row sent
 * loses nothing and causes no second side effect.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { jetstreamManager } from "@nats-io/jetstream";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { after, before, describe, test } from "node:test";
import { UserLoggedInSchema, UserRegisteredSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { createDatabase } from "../../platform/db/database.js";
import { migrate } from "../../platform/db/migrate.js";
import type { Database } from "../../platform/db/types.js";
import { createEventBus, type EventBus } from "../../platform/events/events.js";
import { EVENTS_STREAM } from "../../platform/events/streams.js";
import type { EventMeta } from "../../platform/events/types.js";
import { createLogger } from "../../platform/log.js";
import { connectNats } from "../../platform/nats/connection.js";
import { requestContextFrom, runWithRequest, traceparentOf } from "../../platform/request-context.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { waitFor } from "./helpers.js";

const log = createLogger("silent");
let nats: OwnNats;
let dbHandle: { url: string; drop(): Promise<void> };
let db: Database;
let nc: Awaited<ReturnType<typeof connectNats>>;
let bus: EventBus;
const seen: { userId: string; meta: EventMeta }[] = [];

before(async () => {
  nats = await startNats();
  dbHandle = await createTestDatabase("sy_outbox");
  db = createDatabase(dbHandle.url);
  await migrate(db.sql, []);
  await db.sql`create table public.effects (event_id text not null, user_id text not null)`;
  nc = await connectNats(nats.url, log);
  bus = await createEventBus({ db, nc, log, relay: { claimMs: 1000 } });
  await bus.consume({
    schema: UserLoggedInSchema,
    durable: "outbox-test",
    ackWaitMs: 5000,
    handle: async (event, meta, tx) => {
      seen.push({ userId: event.userId, meta });
      await tx`insert into public.effects (event_id, user_id) values (${meta.eventId}, ${event.userId})`;
    },
  });
});

after(async () => {
  await bus?.stop();
  await nc?.close();
  await db?.close();
  await dbHandle?.drop();
  await nats?.kill();
});

const effectsOf = async (userId: string) =>
  (await db.sql<{ event_id: string }[]>`select event_id from public.effects where user_id = ${userId}`).map((r) => r.event_id);

describe("outbox", () => {
  test("an event committed in a transaction is published on its contract's subject, with its trace, and consumed once", async () => {
    const trace = requestContextFrom(() => null, undefined);
    const id = await runWithRequest(trace, () =>
      db.tx((tx) => bus.publish(tx, UserLoggedInSchema, create(UserLoggedInSchema, { userId: "alice" }))),
    );
    await waitFor("alice's event to be consumed", async () => (await effectsOf("alice")).length === 1);
    const got = seen.find((s) => s.userId === "alice")!;
    assert.equal(got.meta.eventId, id);
    assert.equal(got.meta.subject, "events.auth.user_logged_in");
    assert.equal(got.meta.deliveryCount, 1);
    assert.equal(got.meta.traceparent, traceparentOf(trace));
    // Marking sent follows JetStream's acknowledgement and may land after the consumer has run.
    await waitFor("the outbox row to be marked sent", async () => (await db.sql`select 1 from platform.outbox where id = ${id} and sent_at is not null`).length === 1);
  });

  test("a rolled-back transaction publishes nothing", async () => {
    await assert.rejects(
      db.tx(async (tx) => {
        await bus.publish(tx, UserLoggedInSchema, create(UserLoggedInSchema, { userId: "ghost" }));
        throw new Error("changed my mind");
      }),
      /changed my mind/,
    );
    // Published after the rolled-back one; once it arrives, the ghost would have too.
    await db.tx((tx) => bus.publish(tx, UserLoggedInSchema, create(UserLoggedInSchema, { userId: "after-ghost" })));
    await waitFor("the event after the rollback", async () => (await effectsOf("after-ghost")).length === 1);
    assert.deepEqual(await effectsOf("ghost"), []);
    assert.equal(seen.filter((s) => s.userId === "ghost").length, 0);
  });

  test("a NUL byte or an oversize string in an event field answers INVALID_ARGUMENT and stores nothing", async () => {
    const before = await db.sql`select count(*)::int as n from platform.outbox`;
    for (const [email, reason] of [
      ["a\0b@example.com", /email: must not contain a NUL character/],
      ["x".repeat(65537), /email: must be at most 65536 characters/],
    ] as const) {
      await assert.rejects(
        db.tx((tx) => bus.publish(tx, UserRegisteredSchema, create(UserRegisteredSchema, { userId: "u1", email }))),
        (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument && reason.test(err.message),
      );
    }
    const afterRows = await db.sql`select count(*)::int as n from platform.outbox`;
    assert.equal(afterRows[0]!.n, before[0]!.n);
  });

  test("a string the database cannot store (NUL) written directly answers INVALID_ARGUMENT", async () => {
    await assert.rejects(
      db.tx((tx) => tx`insert into public.effects (event_id, user_id) values ('x', ${"nul\0here"})`),
      (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument && /NUL/.test(err.message),
    );
  });

  for (const stage of ["commit", "claimed", "published"] as const) {
    test(`a process SIGKILLed after ${stage === "commit" ? "commit, before any publish" : stage === "claimed" ? "its relay claimed the row, before publishing" : "publishing, before marking sent"}: published once, consumed once`, async () => {
      const child = spawn(process.execPath, ["--import", "tsx", "test/data/fixtures/crash-publisher.ts"], {
        env: { ...process.env, DATABASE_URL: dbHandle.url, NATS_URL: nats.url, STAGE: stage },
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      await waitFor(`the child to reach "${stage}"`, () => out.includes(`at ${stage}`) && /committed (\S+)/.test(out), 30_000);
      const id = /committed (\S+)/.exec(out)![1]!;
      child.kill("SIGKILL");
      await once(child, "exit");

      // This process's relay takes over (after the dead one's claim lapses).
      bus.flush();
      await waitFor("the event to be consumed after the crash", async () => (await effectsOf("crash-victim")).includes(id));
      await waitFor("the outbox row to be marked sent", async () => (await db.sql`select 1 from platform.outbox where id = ${id} and sent_at is not null`).length === 1);
      assert.deepEqual((await effectsOf("crash-victim")).filter((e) => e === id), [id], "exactly one side effect");
      const jsm = await jetstreamManager(nc);
      const stored = await jsm.streams.getMessage(EVENTS_STREAM, { last_by_subj: "events.auth.user_logged_in" });
      assert.equal(stored?.header.get("Nats-Msg-Id"), id);
      let copies = 0;
      const info = await jsm.streams.info(EVENTS_STREAM);
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const m = await jsm.streams.getMessage(EVENTS_STREAM, { seq });
        if (m?.header.get("Nats-Msg-Id") === id) copies++;
      }
      assert.equal(copies, 1, "the stream holds the event once");
      await db.sql`delete from public.effects where user_id = 'crash-victim'`;
    });
  }
});
