/**
 * Events published straight to NATS, for facts a service keeps outside
 * PostgreSQL (state kept in NATS KV, say): there is no outbox
 * to commit them with, so they are published once the change is stored, as
 * a core publish the events stream captures like any other (same subject,
 * headers and payload as an outbox event). Delivery is at most once, which
 * suits facts whose loss costs a reader only short staleness.
 */
import { toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { NatsConnection } from "@nats-io/nats-core";
import { randomUUID } from "node:crypto";
import { eventHeaders, MSG_ID } from "./headers.js";
import { eventSubject } from "./subject.js";

/**
 * Publishes `event` of type `schema` on its subject, now; `traceparent` links
 * it to the request that caused it. Never throws for a closed connection
 * (the event is then lost, as at-most-once allows).
 */
export function publishDirectEvent<S extends DescMessage>(nc: NatsConnection, schema: S, event: MessageShape<S>, traceparent?: string): void {
  const id = randomUUID();
  const h = eventHeaders(id, schema.typeName, Date.now(), traceparent);
  h.set(MSG_ID, id);
  try {
    nc.publish(eventSubject(schema), toBinary(schema, event), { headers: h });
  } catch {
    // Closed or draining: at most once.
  }
}
