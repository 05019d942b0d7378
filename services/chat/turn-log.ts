/**
 * Durable writes of running turns: their events (binary ChatResponse, by
 * sequence) and steps, in order per turn, each batch committed at once after
 * checking this instance still holds each turn's lease (FOR SHARE, so a
 * takeover and a write never interleave): one statement when the batch is
 * only events and steps, else one transaction. Writes of a turn queued while
 * its batch commits go together in its next batch, so a busy process commits
 * many events at the cost of one; batches of different turns commit side by
 * side. An event reaches streams only after it is committed, so a client
 * never holds an event a takeover could lose, except text deltas: those
 * stream as the model writes them, and a takeover skips the one number an
 * unrecorded delta can hold (turn-runner's emitText).
 */
import { toBinary } from "@bufbuild/protobuf";
import type { NatsConnection } from "@nats-io/nats-core";
import { ChatResponseSchema, type ChatResponse } from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { Database, TransactionSql } from "../../platform/index.js";
import type { TurnHub } from "./turn-hub.js";
import type { TurnStep } from "./steps.js";

/** Thrown to a turn's runner when another instance took the turn over. */
export class LostTurnError extends Error {
  constructor(turnId: string) {
    super(`turn ${turnId} is now held by another instance`);
  }
}

/** One write: events and steps of one turn, plus statements to run in the same transaction. */
export interface TurnWrite {
  readonly turnId: string;
  readonly events: readonly ChatResponse[];
  readonly steps?: readonly TurnStep[];
  /** Its events were handed to this instance's streams already (text deltas, see turn-runner's emitText): the commit does not hand them again. */
  readonly announced?: boolean;
  /** Runs inside the transaction after the rows are written (e.g. finishing the turn). */
  readonly extra?: (tx: TransactionSql) => Promise<void>;
}

interface Queued {
  readonly write: TurnWrite;
  resolve(): void;
  reject(err: unknown): void;
}

/** The process's writer of turn events and steps. */
export interface TurnLog {
  /** Commits `write` (in order with the turn's earlier writes); rejects with LostTurnError when the lease is gone. */
  write(write: TurnWrite): Promise<void>;
}

/** Batches committing at once: more turns' writes overlap their round trips and commits (PostgreSQL groups the flushes). */
const maxBatchesInFlight = 4;

/**
 * The NATS subject that wakes readers of `turnId` on other instances. Its
 * payload is the highest sequence just committed (decimal; empty when the
 * write had no event, such as a failed turn's end), so a reader that already
 * holds it from this instance's hub does not read PostgreSQL again.
 */
export function turnSubject(turnId: string): string {
  return `chat.turn.${turnId}`;
}

/** The payload of a wake-up: the sequence committed. */
export function encodeWake(sequence: bigint): string {
  return sequence.toString();
}

/** The sequence a wake-up names; undefined for an empty or foreign payload (the reader reads anyway). */
export function decodeWake(payload: Uint8Array): bigint | undefined {
  const text = new TextDecoder().decode(payload);
  return /^[0-9]{1,19}$/.test(text) ? BigInt(text) : undefined;
}

/** Creates the writer for this instance (`owner` is its instance id). */
export function createTurnLog(db: Database, owner: string, hub: TurnHub, nats: NatsConnection | undefined): TurnLog {
  let queue: Queued[] = [];
  /** Turns whose batch is committing: their later writes wait in the queue. */
  const committing = new Set<string>();
  let inflight = 0;

  /** Commits a batch; returns the turns this instance held (only their writes were made). */
  function commit(batch: readonly Queued[]): Promise<Set<string>> {
    return batch.some((q) => q.write.extra !== undefined) ? commitInTransaction(batch) : commitInOneStatement(batch);
  }

  /**
   * The common batch (events and steps, nothing else): one prepared
   * statement, so one round trip and one commit. Its first CTE takes the
   * lease check's row locks (FOR SHARE) before the inserts, which write only
   * the rows of turns still held, exactly as the transaction below does.
   */
  async function commitInOneStatement(batch: readonly Queued[]): Promise<Set<string>> {
    const ids = [...new Set(batch.map((q) => q.write.turnId))];
    const events = batch.flatMap((q) => q.write.events.map((e) => ({ turnId: q.write.turnId, seq: Number(e.sequence), data: Buffer.from(toBinary(ChatResponseSchema, e)).toString("base64") })));
    const steps = batch.flatMap((q) => (q.write.steps ?? []).map((st) => ({ turnId: q.write.turnId, step: st.step, kind: st.kind, data: JSON.stringify(st) })));
    const held = await db.sql<{ id: string }[]>`
      with held as (
        select id from chat.turns where id = any(${ids}::text[]) and lease_owner = ${owner} and state = 'running' for share),
      events as (
        insert into chat.turn_events (turn_id, seq, event)
        select e.turn_id, e.seq, decode(e.data, 'base64')
        from unnest(${events.map((e) => e.turnId)}::text[], ${events.map((e) => e.seq)}::bigint[], ${events.map((e) => e.data)}::text[]) as e(turn_id, seq, data)
        where e.turn_id in (select id from held)),
      steps as (
        insert into chat.turn_steps (turn_id, step, kind, data)
        select st.turn_id, st.step, st.kind, st.data::jsonb
        from unnest(${steps.map((st) => st.turnId)}::text[], ${steps.map((st) => st.step)}::int[], ${steps.map((st) => st.kind)}::text[], ${steps.map((st) => st.data)}::text[]) as st(turn_id, step, kind, data)
        where st.turn_id in (select id from held))
      select id from held`;
    return new Set(held.map((r) => r.id));
  }

  /** A batch with statements of its own (a turn's end, an approval request): one transaction. */
  async function commitInTransaction(batch: readonly Queued[]): Promise<Set<string>> {
    const ids = [...new Set(batch.map((q) => q.write.turnId))];
    return db.tx(async (tx) => {
      const held = await tx<{ id: string }[]>`
        select id from chat.turns where id = any(${ids}) and lease_owner = ${owner} and state = 'running' for share`;
      const owned = new Set(held.map((r) => r.id));
      const mine = batch.filter((q) => owned.has(q.write.turnId));
      const events = mine.flatMap((q) => q.write.events.map((e) => ({ turn_id: q.write.turnId, seq: Number(e.sequence), event: Buffer.from(toBinary(ChatResponseSchema, e)) })));
      const steps = mine.flatMap((q) => (q.write.steps ?? []).map((s) => ({ turn_id: q.write.turnId, step: s.step, kind: s.kind, data: tx.json(s as never) })));
      if (events.length > 0) await tx`insert into chat.turn_events ${tx(events, "turn_id", "seq", "event")}`;
      if (steps.length > 0) await tx`insert into chat.turn_steps ${tx(steps, "turn_id", "step", "kind", "data")}`;
      for (const q of mine) if (q.write.extra) await q.write.extra(tx);
      return owned;
    });
  }

  function delivered(batch: readonly Queued[], owned: Set<string>): void {
    /** Per turn woken, the highest sequence committed (undefined: no event, e.g. a failed turn's end). */
    const woken = new Map<string, bigint | undefined>();
    for (const q of batch) {
      if (!owned.has(q.write.turnId)) {
        q.reject(new LostTurnError(q.write.turnId));
        continue;
      }
      q.resolve();
      if (q.write.events.length > 0 && q.write.announced !== true) hub.emit(q.write.turnId, q.write.events);
      woken.set(q.write.turnId, q.write.events.at(-1)?.sequence ?? woken.get(q.write.turnId));
    }
    for (const [id, sequence] of woken) nats?.publish(turnSubject(id), sequence === undefined ? undefined : encodeWake(sequence));
  }

  /** Commits one batch and settles its writes; a failed batch is retried write by write, so one bad write fails alone. */
  async function commitBatch(batch: readonly Queued[]): Promise<void> {
    try {
      delivered(batch, await commit(batch));
    } catch (err) {
      if (batch.length === 1) return batch[0]!.reject(err);
      for (const q of batch) {
        try {
          delivered([q], await commit([q]));
        } catch (e) {
          q.reject(e);
        }
      }
    }
  }

  /**
   * Starts batches while fewer than `maxBatchesInFlight` commit: each takes
   * every queued write of the turns not committing now. A turn is in one
   * batch at a time, so its writes commit (and reach streams) in order, while
   * other turns' writes need not wait for that commit.
   */
  function pump(): void {
    while (inflight < maxBatchesInFlight && queue.length > 0) {
      const batch = queue.filter((q) => !committing.has(q.write.turnId));
      if (batch.length === 0) return;
      queue = queue.filter((q) => committing.has(q.write.turnId));
      const turns = new Set(batch.map((q) => q.write.turnId));
      for (const t of turns) committing.add(t);
      inflight++;
      void commitBatch(batch).finally(() => {
        inflight--;
        for (const t of turns) committing.delete(t);
        pump();
      });
    }
  }

  /** Batches start once the current run of microtasks is over, so writes a turn makes in a row (a step and the turn's end) commit together. */
  let pumpScheduled = false;
  const schedulePump = () => {
    if (pumpScheduled) return;
    pumpScheduled = true;
    setImmediate(() => {
      pumpScheduled = false;
      pump();
    });
  };

  return {
    write(write) {
      return new Promise<void>((resolve, reject) => {
        queue.push({ write, resolve, reject });
        schedulePump();
      });
    },
  };
}
