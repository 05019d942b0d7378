/**
 * The process's event bus: publishing through the outbox (in the caller's
 * transaction), the relay that moves outbox rows to JetStream, and durable
 * consumers. See relay.ts and consumer.ts for the guarantees.
 */
import { toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { randomUUID } from "node:crypto";
import type { TransactionSql } from "postgres";
import type { Logger } from "../log.js";
import { findViolation } from "../middleware/validate.js";
import { currentRequest, traceparentOf } from "../request-context.js";
import { afterCommit } from "../db/database.js";
import type { Database } from "../db/types.js";
import { startConsumer } from "./consumer.js";
import { startRelay, type RelayOptions } from "./relay.js";
import type { StreamDeclarer } from "../nats/declare.js";
import { ensureEventStreams, eventStreams } from "./streams.js";
import { eventSubject } from "./subject.js";
import type { ConsumerOptions, Events } from "./types.js";

/** What the bus is built on. */
export interface EventBusOptions {
  readonly db: Database;
  readonly nc: NatsConnection;
  readonly log: Logger;
  /** Declares the event streams (NATS_REPLICAS, retries, readiness); without one they are declared once, R1. */
  readonly streams?: StreamDeclarer;
  /** Relay tuning; `false` runs no relay in this process (rows wait for another one). */
  readonly relay?: false | Partial<Omit<RelayOptions, "sql" | "js" | "nc" | "log">>;
}

/** The bus: `Events` plus its lifecycle. */
export interface EventBus extends Events {
  /** Asks the relay for a publish pass now. */
  flush(): void;
  /** Stops the consumers (waiting for handlers in progress), then the relay. */
  stop(): Promise<void>;
}

/**
 * Declares the event streams (idempotent) and starts the relay. Rejects when
 * JetStream is not enabled on the server or a stream cannot be declared.
 */
export async function createEventBus(options: EventBusOptions): Promise<EventBus> {
  const { db, nc, log } = options;
  const jsm = await jetstreamManager(nc, { timeout: 5000 });
  const js = jetstream(nc, { timeout: 5000 });
  if (options.streams !== undefined) await options.streams.declare(eventStreams());
  else await ensureEventStreams(jsm, { log });
  const relay =
    options.relay === false ? undefined : startRelay({ ...options.relay, sql: db.sql, js, nc, log: log.child({ component: "outbox-relay" }) });
  const consumers = new Set<() => Promise<void>>();
  const kick = () => relay?.kick();
  return {
    async publish<S extends DescMessage>(tx: TransactionSql, schema: S, event: MessageShape<S>): Promise<string> {
      const subject = eventSubject(schema);
      // The same limits as request fields: no NUL, no string over 64 KiB.
      const violation = findViolation(schema, event);
      if (violation !== undefined) throw new ConnectError(`event ${schema.typeName}: ${violation}`, Code.InvalidArgument);
      const id = randomUUID();
      const request = currentRequest();
      const traceparent = request === undefined ? null : traceparentOf(request);
      await tx`
        insert into platform.outbox (id, subject, type_name, payload, traceparent)
        values (${id}, ${subject}, ${schema.typeName}, ${toBinary(schema, event)}, ${traceparent})`;
      afterCommit(tx, kick);
      return id;
    },
    async consume(consumerOptions: ConsumerOptions<DescMessage>) {
      const stop = await startConsumer({ db, js, jsm, log }, consumerOptions);
      const tracked = async () => {
        consumers.delete(tracked);
        await stop();
      };
      consumers.add(tracked);
      return tracked;
    },
    flush: kick,
    async stop() {
      await Promise.allSettled([...consumers].map((stop) => stop()));
      await relay?.stop();
    },
  } as EventBus;
}
