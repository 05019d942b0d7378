/**
 * Dead letters: listing them and replaying one.
 *
 * A replay publishes the dead letter's payload again on its original subject
 * with its original event id (`Switchyard-Event-Id`) and a new `Nats-Msg-Id`
 * (the original one would be dropped as a duplicate). Every consumer of that
 * subject receives it; those that handled the event skip it by its id, so
 * only the consumer that gave up runs it again. The dead letter is deleted
 * once the replay is stored.
 */
import type { JetStreamClient, JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/nats-core";
import * as H from "./headers.js";
import { DLQ_STREAM } from "./streams.js";

/** One dead letter as `npm run dlq -- list` shows it. */
export interface DeadLetter {
  /** Its sequence in the dead-letter stream: the id `replay` takes. */
  readonly id: number;
  readonly eventId: string;
  readonly consumer: string;
  readonly subject: string;
  readonly eventType: string;
  readonly error: string;
  readonly deliveries: number;
  readonly deadAt: Date;
  readonly traceparent: string | undefined;
  readonly payloadBytes: number;
}

function toDeadLetter(m: StoredMsg): DeadLetter {
  const h = m.header;
  return {
    id: m.seq,
    eventId: h.get(H.EVENT_ID),
    consumer: h.get(H.DLQ_CONSUMER),
    subject: h.get(H.DLQ_SUBJECT),
    eventType: h.get(H.EVENT_TYPE),
    error: h.get(H.DLQ_ERROR),
    deliveries: Number(h.get(H.DLQ_DELIVERIES)),
    deadAt: new Date(Number(h.get(H.DLQ_AT)) || m.time.getTime()),
    traceparent: h.get(H.TRACEPARENT) || undefined,
    payloadBytes: m.data.length,
  };
}

/** The oldest `limit` dead letters still stored (default 100). */
export async function listDeadLetters(jsm: JetStreamManager, limit = 100): Promise<DeadLetter[]> {
  const { state } = await jsm.streams.info(DLQ_STREAM);
  const out: DeadLetter[] = [];
  // An empty stream reports first_seq 0 (fresh) or last_seq + 1 (emptied);
  // sequence 0 does not exist, and asking for it is a bad request.
  if (state.messages === 0) return out;
  for (let seq = Math.max(1, state.first_seq); seq <= state.last_seq && out.length < limit; seq++) {
    const m = await getStored(jsm, seq);
    if (m !== null) out.push(toDeadLetter(m));
  }
  return out;
}

/** The dead letter with sequence `id`, or null when there is none. */
export async function getDeadLetter(jsm: JetStreamManager, id: number): Promise<DeadLetter | null> {
  const m = await getStored(jsm, id);
  return m === null ? null : toDeadLetter(m);
}

/**
 * Replays dead letter `id` (see the module comment) and deletes it; resolves
 * with what was replayed, or null when no such dead letter exists.
 */
export async function replayDeadLetter(jsm: JetStreamManager, js: JetStreamClient, id: number): Promise<DeadLetter | null> {
  const m = await getStored(jsm, id);
  if (m === null) return null;
  const letter = toDeadLetter(m);
  const h = natsHeaders();
  for (const key of m.header.keys()) {
    if (key.startsWith("Switchyard-Dlq-") || key === H.MSG_ID || key.startsWith("Nats-")) continue;
    for (const v of m.header.values(key)) h.append(key, v);
  }
  h.set(H.EVENT_ID, letter.eventId);
  h.set(H.REPLAYED_FROM, String(id));
  // A repeated replay of the same dead letter is dropped as a duplicate.
  await js.publish(letter.subject, m.data, { msgID: `${letter.eventId}.replay.${id}`, headers: h });
  await jsm.streams.deleteMessage(DLQ_STREAM, id, false);
  return letter;
}

async function getStored(jsm: JetStreamManager, seq: number): Promise<StoredMsg | null> {
  try {
    return await jsm.streams.getMessage(DLQ_STREAM, { seq });
  } catch (err) {
    if (/no message found|not found/i.test((err as Error).message)) return null;
    throw err;
  }
}
