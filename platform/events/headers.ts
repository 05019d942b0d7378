/**
 * NATS headers events carry. Besides JetStream's `Nats-Msg-Id` (the outbox id,
 * so a re-publish after a crash is dropped as a duplicate), an event carries
 * its id again in `Switchyard-Event-Id` (a replayed dead letter gets a new
 * `Nats-Msg-Id` but keeps its event id, so consumers that handled it skip it),
 * its type, when it was committed, and the W3C `traceparent` of the request
 * that caused it.
 */
import { headers, type MsgHdrs } from "@nats-io/nats-core";

/** JetStream's de-duplication id. */
export const MSG_ID = "Nats-Msg-Id";
/** The event id (the outbox row id); consumers are idempotent by it. */
export const EVENT_ID = "Switchyard-Event-Id";
/** The protobuf type name of the payload, e.g. switchyard.events.v1.TierChanged. */
export const EVENT_TYPE = "Switchyard-Event-Type";
/** When the event was committed, epoch milliseconds. */
export const OCCURRED_AT = "Switchyard-Occurred-At";
/** W3C trace context of the request that caused the event. */
export const TRACEPARENT = "traceparent";

/** Dead letters: the durable consumer that gave up. */
export const DLQ_CONSUMER = "Switchyard-Dlq-Consumer";
/** Dead letters: the subject the event was published on. */
export const DLQ_SUBJECT = "Switchyard-Dlq-Subject";
/** Dead letters: the last error the handler threw (one line, at most 1000 characters). */
export const DLQ_ERROR = "Switchyard-Dlq-Error";
/** Dead letters: how many times the event was delivered. */
export const DLQ_DELIVERIES = "Switchyard-Dlq-Deliveries";
/** Dead letters: the event's sequence in the events stream. */
export const DLQ_STREAM_SEQ = "Switchyard-Dlq-Stream-Seq";
/** Dead letters: when it was dead-lettered, epoch milliseconds. */
export const DLQ_AT = "Switchyard-Dlq-At";
/** A replayed event: the dead-letter sequence it came from. */
export const REPLAYED_FROM = "Switchyard-Replayed-From";

/** The headers of an event, as the relay and a direct publish both send them (JetStream's `Nats-Msg-Id` aside). */
export function eventHeaders(id: string, typeName: string, occurredAtMs: number, traceparent?: string | null): MsgHdrs {
  const h = headers();
  h.set(EVENT_ID, id);
  h.set(EVENT_TYPE, typeName);
  h.set(OCCURRED_AT, String(occurredAtMs));
  if (traceparent) h.set(TRACEPARENT, traceparent);
  return h;
}
