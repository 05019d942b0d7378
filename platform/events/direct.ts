/**
 * Events published straight to NATS, for facts a service keeps outside
 * PostgreSQL (state kept in NATS KV, say): there is no outbox
 * to commit them with, so they are published once the change is stored, as
 * a core publish the events stream captures like any other (same subject,
 * headers and payload as an outbox event). Delivery is at most once, which
 * suits facts whose loss costs a reader only short staleness.
 */
import { toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { headers, type NatsConnection } from "@nats-io/nats-core";
import { randomUUID } from "node:crypto";
import { EVENT_ID, EVENT_TYPE, MSG_ID, OCCURRED_AT, TRACEPARENT } from "./headers.js";
import { eventSubject } from "./subject.js";

/**
 * Publishes `event` of type `schema` on its subject, now; `traceparent` links
 * it to the request that caused it. Never throws for a closed connection
 * (the event is then lost, as at-most-once allows).
 */
export function publishDirectEvent<S extends DescMessage>(nc: NatsConnection, schema: S, event: MessageShape<S>, traceparent?: string): void {
  const id = randomUUID();
  const h = headers();
  h.set(MSG_ID, id);
  h.set(EVENT_ID, id);
  h.set(EVENT_TYPE, schema.typeName);
  h.set(OCCURRED_AT, String(Date.now()));
  if (traceparent) h.set(TRACEPARENT, traceparent);
  try {
    nc.publish(eventSubject(schema), toBinary(schema, event), { headers: h });
  } catch {
    // Closed or draining: at most once.
  }
}
