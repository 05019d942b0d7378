/**
 * The turn log and the feed against a real PostgreSQL: a write by an
 * instance that no longer holds the turn's lease is refused (nothing is
 * written), and a reader that falls far behind still gets every event once,
 * in order, from the database instead of an ever-growing buffer; text the
 * runner streamed before its commit is not handed to streams twice.
 */
import { create } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ChatResponseSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { createDatabase, migrate, type Database } from "../../platform/index.js";
import { createTestDatabase } from "../../test/support/infra.js";
import { followTurn, maxBuffered } from "./turn-feed.js";
import { createTurnHub } from "./turn-hub.js";
import { createTurnLog, decodeWake, encodeWake, LostTurnError } from "./turn-log.js";

let dbHandle: Awaited<ReturnType<typeof createTestDatabase>>;
let db: Database;

before(async () => {
  dbHandle = await createTestDatabase("sy_chat_log");
  db = createDatabase(dbHandle.url, { max: 4 });
  await migrate(db.sql, [{ service: "chat", dir: new URL("./migrations/", import.meta.url) }]);
});

after(async () => {
  await db?.close();
  await dbHandle?.drop();
});

async function turnHeldBy(owner: string): Promise<string> {
  const id = `t${Math.random().toString(36).slice(2)}`;
  await db.sql`insert into chat.conversations (id, user_id) values (${id}, 'u')`;
  await db.sql`insert into chat.turns (id, conversation_id, user_id, tier, message, state, lease_owner, lease_until, deadline)
               values (${id}, ${id}, 'u', 2, 'x', 'running', ${owner}, now() + interval '1 minute', now() + interval '1 hour')`;
  return id;
}

const delta = (seq: number) => create(ChatResponseSchema, { sequence: BigInt(seq), event: { case: "textDelta", value: { text: `${seq} ` } } });

test("only the lease holder writes a turn's events", async () => {
  const turnId = await turnHeldBy("a");
  const hub = createTurnHub();
  await createTurnLog(db, "a", hub, undefined).write({ turnId, events: [delta(1)] });
  await assert.rejects(createTurnLog(db, "b", hub, undefined).write({ turnId, events: [delta(2)] }), LostTurnError);
  const rows = await db.sql<{ seq: string }[]>`select seq from chat.turn_events where turn_id = ${turnId} order by seq`;
  assert.deepEqual(rows.map((r) => Number(r.seq)), [1]);
});

test("a reader far behind gets every event once, in order, without buffering them all", async () => {
  const turnId = await turnHeldBy("a");
  const hub = createTurnHub();
  const log = createTurnLog(db, "a", hub, undefined);
  await log.write({ turnId, events: [delta(1)] });
  const abort = new AbortController();
  const feed = followTurn({ db, hub, nats: undefined }, turnId, 0, abort.signal);
  assert.equal(Number((await feed.next()).value?.sequence), 1);
  // The reader stops reading while many more events are committed than a stream may hold.
  const total = maxBuffered * 3;
  await Promise.all(Array.from({ length: total }, (_, i) => log.write({ turnId, events: [delta(i + 2)] })));
  await log.write({ turnId, events: [create(ChatResponseSchema, { sequence: BigInt(total + 2), event: { case: "done", value: {} } })] });
  const seen: number[] = [1];
  for await (const e of feed) seen.push(Number(e.sequence));
  assert.deepEqual(seen, Array.from({ length: total + 2 }, (_, i) => i + 1));
  abort.abort();
});

test("events the runner streamed before their commit are not handed to streams again; others are, after it", async () => {
  const turnId = await turnHeldBy("a");
  const hub = createTurnHub();
  const handed: number[] = [];
  hub.listen(turnId, { events: (evs) => handed.push(...evs.map((e) => Number(e.sequence))), ended: () => {} });
  const log = createTurnLog(db, "a", hub, undefined);
  await log.write({ turnId, events: [delta(1)], announced: true });
  await log.write({ turnId, events: [delta(2)] });
  assert.deepEqual(handed, [2]);
  const rows = await db.sql<{ seq: string }[]>`select seq from chat.turn_events where turn_id = ${turnId} order by seq`;
  assert.deepEqual(rows.map((r) => Number(r.seq)), [1, 2], "both are recorded");
});

test("a wake-up names the sequence committed; anything else names none", () => {
  assert.equal(decodeWake(new TextEncoder().encode(encodeWake(12345678901234n))), 12345678901234n);
  assert.equal(decodeWake(new Uint8Array()), undefined);
  assert.equal(decodeWake(new TextEncoder().encode("12x")), undefined);
});
