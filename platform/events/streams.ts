/**
 * The two streams of the event bus: EVENTS captures every event subject
 * (`${EVENT_SUBJECT_PREFIX}>`; the subjects come from the contracts'
 * event_subject options), EVENTS_DLQ holds dead letters on
 * `dlq.events.<durable>`. Declared through platform/nats/declare.ts, so
 * NATS_REPLICAS applies and an operator's settings are respected.
 */
import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import { createLogDestination, createLogger, type Logger } from "../log.js";
import { declareStream, type StreamDeclaration } from "../nats/declare.js";
import { EVENT_SUBJECT_PREFIX } from "./subject.js";

/** The events stream. */
export const EVENTS_STREAM = "EVENTS";
/** The dead-letter stream. */
export const DLQ_STREAM = "EVENTS_DLQ";
/** Dead letters of durable `d` are stored on `${DLQ_SUBJECT_PREFIX}${d}`. */
export const DLQ_SUBJECT_PREFIX = "dlq.events.";

/** How long a re-published outbox id is recognised as a duplicate; longer than a relay's claim. */
export const DUPLICATE_WINDOW_MS = 2 * 60_000;

const DAY_MS = 24 * 3600_000;

/** The declarations of both streams. */
export function eventStreams(): StreamDeclaration[] {
  return [
    {
      name: EVENTS_STREAM,
      subjects: [`${EVENT_SUBJECT_PREFIX}>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(7 * DAY_MS),
      duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    },
    {
      name: DLQ_STREAM,
      subjects: [`${DLQ_SUBJECT_PREFIX}>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(30 * DAY_MS),
      duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    },
  ];
}

/**
 * Declares both streams once, without retries (for tools such as `npm run
 * dlq`; processes declare them through their StreamDeclarer). Replicas
 * default to 1 and are never lowered.
 */
export async function ensureEventStreams(jsm: JetStreamManager, options: { replicas?: number; log?: Logger } = {}): Promise<void> {
  const log = options.log ?? createLogger("warn", createLogDestination(2)); // stderr: tools own stdout
  for (const s of eventStreams()) await declareStream(jsm, s, options.replicas ?? 1, log);
}
