/**
 * The two streams of the event bus: EVENTS captures every `events.>` subject
 * (the subjects come from the contracts' event_subject options), EVENTS_DLQ
 * holds dead letters on `dlq.events.<durable>`.
 */
import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import { ensureStream } from "../nats/streams.js";

/** The events stream. */
export const EVENTS_STREAM = "EVENTS";
/** The dead-letter stream. */
export const DLQ_STREAM = "EVENTS_DLQ";
/** Dead letters of durable `d` are stored on `${DLQ_SUBJECT_PREFIX}${d}`. */
export const DLQ_SUBJECT_PREFIX = "dlq.events.";

/** How long a re-published outbox id is recognised as a duplicate; longer than a relay's claim. */
export const DUPLICATE_WINDOW_MS = 2 * 60_000;

const DAY_MS = 24 * 3600_000;

/** Declares both streams (idempotent; safe from several instances at once). */
export async function ensureEventStreams(jsm: JetStreamManager): Promise<void> {
  await ensureStream(jsm, {
    name: EVENTS_STREAM,
    subjects: ["events.>"],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(7 * DAY_MS),
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    num_replicas: 1,
  });
  await ensureStream(jsm, {
    name: DLQ_STREAM,
    subjects: [`${DLQ_SUBJECT_PREFIX}>`],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(30 * DAY_MS),
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    num_replicas: 1,
  });
}
