/**
 * Events as services see them: protobuf messages of `switchyard.events.v1`,
 * each published on the subject its `(switchyard.options.v1.event_subject)`
 * option names, in the one JetStream stream on `events.>`.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { TransactionSql } from "postgres";

/** What a consumer learns about a delivered event besides its payload. */
export interface EventMeta {
  /** The outbox id; also the JetStream `Nats-Msg-Id`. */
  readonly eventId: string;
  readonly subject: string;
  /** 1 on the first delivery. */
  readonly deliveryCount: number;
  /** When the event was committed. */
  readonly occurredAt: Date;
  /** W3C traceparent of the request that caused the event, if any. */
  readonly traceparent: string | undefined;
}

/** A durable consumer's declaration. */
export interface ConsumerOptions<S extends DescMessage> {
  /** The event type consumed. */
  readonly schema: S;
  /** Durable name, unique per subscribing service and event type, e.g. "auth-tier-changed". */
  readonly durable: string;
  /**
   * Handles one event inside a transaction that also records the event id as
   * processed, so a redelivered event is skipped. Throwing retries it with
   * backoff; after `maxDeliver` attempts it goes to the dead-letter stream.
   */
  handle(event: MessageShape<S>, meta: EventMeta, tx: TransactionSql): Promise<void>;
  /** Attempts before dead-lettering (default 5). */
  readonly maxDeliver?: number;
  /** Milliseconds a delivery may take before it is redelivered (default 30000). */
  readonly ackWaitMs?: number;
  /**
   * Milliseconds to wait before redelivering after the n-th failed attempt
   * (the last value repeats; default 1 s, 5 s, 15 s, 30 s, 60 s).
   */
  readonly backoffMs?: readonly number[];
  /**
   * Events handled at once (default 4). Above 1, events of this type may be
   * handled out of publish order (redeliveries reorder them anyway), so
   * handlers compare timestamps where order matters.
   */
  readonly concurrency?: number;
  /**
   * Events already waiting that may be handled in one transaction (default
   * 32; 1 = a transaction per event). If any of them fails, the batch is
   * rolled back and each event runs alone, so the handler may run twice for
   * an event; like any redelivery, that is harmless when the handler writes
   * only through `tx`.
   */
  readonly batchSize?: number;
}

/** Publishing and consuming events. */
export interface Events {
  /**
   * Writes `event` to the outbox inside `tx`; the relay publishes it after
   * commit. Returns the event id.
   */
  publish<S extends DescMessage>(tx: TransactionSql, schema: S, event: MessageShape<S>): Promise<string>;
  /** Starts a durable consumer; the returned function stops it. */
  consume<S extends DescMessage>(options: ConsumerOptions<S>): Promise<() => Promise<void>>;
}
