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
import type { ReadinessProbe } from "../server.js";
import { findViolation } from "../middleware/validate.js";
import { afterCommit, canHookCommit } from "../db/database.js";
import { currentTraceparent } from "../telemetry/tracing.js";
import type { Database } from "../db/types.js";
import { startConsumer } from "./consumer.js";
import { OUTBOX_CHANNEL, startRelay, type CommittedRow, type RelayOptions } from "./relay.js";
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
  /**
   * `/readyz` checks: each started consumer adds `consumer:<durable>` here,
   * false once its loop has died, and removes it when stopped.
   */
  readonly readiness?: Record<string, ReadinessProbe>;
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
      const row: CommittedRow = {
        id: randomUUID(),
        subject,
        type_name: schema.typeName,
        payload: toBinary(schema, event),
        // The writing span's context (the RPC's), so the consumer's span is its child.
        traceparent: currentTraceparent() ?? null,
        created_at: new Date(),
      };
      // With a relay here and a commit hook, the row is written claimed by
      // this relay and published from memory at commit; otherwise every
      // relay is notified (see relay.ts). A savepoint's `sql` has no commit
      // hook, so an event published in a savepoint takes the notified path.
      const direct = relay !== undefined && canHookCommit(tx);
      if (direct) {
        await tx`
          insert into platform.outbox (id, subject, type_name, payload, traceparent, claimed_until)
          values (${row.id}, ${subject}, ${row.type_name}, ${row.payload}, ${row.traceparent},
                  clock_timestamp() + ${relay.claimMs} * interval '1 millisecond')`;
        afterCommit(tx, () => relay.send(row));
      } else {
        await tx`
          with written as (
            insert into platform.outbox (id, subject, type_name, payload, traceparent)
            values (${row.id}, ${subject}, ${row.type_name}, ${row.payload}, ${row.traceparent}) returning 1)
          select pg_notify(${OUTBOX_CHANNEL}, '') from written`;
      }
      return row.id;
    },
    async consume(consumerOptions: ConsumerOptions<DescMessage>) {
      const consumer = await startConsumer({ db, js, jsm, log }, consumerOptions);
      const check = `consumer:${consumer.durable}`;
      if (options.readiness) options.readiness[check] = () => consumer.alive;
      const tracked = async () => {
        consumers.delete(tracked);
        if (options.readiness) delete options.readiness[check];
        await consumer.stop();
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
