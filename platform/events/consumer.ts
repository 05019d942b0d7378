/**
 * A durable JetStream consumer running one event type's handler.
 *
 * - Explicit acks, acknowledged only after the handler's transaction commits.
 * - Events that have already arrived together are handled in one
 *   transaction (up to `batchSize`): commits, not handlers, bound a
 *   consumer's rate. If anything in a batch fails it is rolled back and each
 *   event runs in a transaction of its own.
 * - Idempotent by event id: the transaction first inserts (consumer, event id)
 *   into platform.processed_events; a redelivered event finds it and is
 *   acknowledged without running the handler. A redelivery that arrives while
 *   the first delivery still runs (a handler slower than its ack wait) waits
 *   on that row's lock, then skips, or runs if the first one failed.
 * - A failed attempt is retried after a backoff (NAK with delay). After
 *   `maxDeliver` failed attempts, or once a delivery beyond `maxDeliver`
 *   arrives with no success (attempts that timed out or died with their
 *   process), the message goes to the dead-letter stream with its headers,
 *   last error and delivery count, and is terminated: later events keep
 *   flowing. Failures meaning the database or NATS is down (UNAVAILABLE) are
 *   retried without counting towards dead-lettering: an outage must not
 *   bury good events.
 * - The handler runs in the trace of the request that caused the event, in a
 *   CONSUMER span child of that request's span when tracing is on.
 */
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { headers as natsHeaders, nanos } from "@nats-io/nats-core";
import { ID_RULE, isId } from "../ids.js";
import type { Logger } from "../log.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import type { Database } from "../db/types.js";
import { isNatsUnavailable } from "../nats/errors.js";
import { ensureConsumer } from "../nats/streams.js";
import { requestContextFrom, type RequestContext } from "../request-context.js";
import { runEventHandler } from "../telemetry/tracing.js";
import * as H from "./headers.js";
import { DLQ_SUBJECT_PREFIX, EVENTS_STREAM } from "./streams.js";
import { eventSubject } from "./subject.js";
import type { ConsumerOptions, EventMeta } from "./types.js";

/** What a consumer runs on. */
export interface ConsumerRuntime {
  readonly db: Database;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly log: Logger;
}

/** A started consumer. */
export interface RunningConsumer {
  readonly durable: string;
  /** False once its loop has died (its message stream failed or ended) without being stopped: `/readyz` says so. */
  readonly alive: boolean;
  /** Stops taking messages and waits for the handlers in progress. */
  stop(): Promise<void>;
}

const DEFAULT_BACKOFF = [1000, 5000, 15_000, 30_000, 60_000];
/** Failures remembered per consumer (by stream sequence); the oldest is forgotten beyond. */
const FAILURES_KEPT = 10_000;

/** A consumer's options with their defaults applied and bounds enforced. */
export interface ConsumerSettings {
  readonly maxDeliver: number;
  readonly ackWaitMs: number;
  readonly backoff: readonly number[];
  readonly concurrency: number;
  readonly batchSize: number;
}

/** Applies the defaults and bounds of ConsumerOptions (see types.ts). */
export function consumerSettings(options: Omit<ConsumerOptions<DescMessage>, "schema" | "durable" | "handle">): ConsumerSettings {
  return {
    maxDeliver: Math.max(1, options.maxDeliver ?? 5),
    ackWaitMs: options.ackWaitMs ?? 30_000,
    backoff: options.backoffMs?.length ? options.backoffMs : DEFAULT_BACKOFF,
    concurrency: Math.max(1, options.concurrency ?? 4),
    batchSize: Math.max(1, options.batchSize ?? 32),
  };
}

/** The NAK delay after the `deliveryCount`-th failed attempt (the last backoff value repeats). */
export function retryDelay(backoff: readonly number[], deliveryCount: number): number {
  return backoff[Math.min(Math.max(deliveryCount, 1), backoff.length) - 1]!;
}

/** The last failure of a delivery, as remembered between its attempts. */
export interface Failure {
  readonly message: string;
  /** Meant "the database or NATS is down": never counts towards dead-lettering. */
  readonly transient: boolean;
}

/**
 * Whether a delivery must be dead-lettered before it runs: it is beyond
 * `maxDeliver` and its last failure here (if any) was not transient. Returns
 * the error to record, or undefined to run it.
 */
export function overDelivered(deliveries: number, settings: Pick<ConsumerSettings, "maxDeliver" | "ackWaitMs">, previous: Failure | undefined): string | undefined {
  if (deliveries <= settings.maxDeliver || previous?.transient) return undefined;
  return (
    previous?.message ??
    `no acknowledgement after ${deliveries - 1} deliveries (the handler ran longer than the ack wait of ${settings.ackWaitMs} ms, or its process stopped)`
  );
}

/** The event id of a delivered message: its Switchyard-Event-Id, else its Nats-Msg-Id, else stream and sequence. */
export function eventIdOf(m: Pick<JsMsg, "headers" | "info" | "seq">): string {
  return m.headers?.get(H.EVENT_ID) || m.headers?.get(H.MSG_ID) || `${m.info.stream}.${m.seq}`;
}

/** NATS header values cannot hold line breaks; keep errors short. */
export function oneLine(s: string): string {
  return s.replace(/[\r\n\t\0]+/g, " ").slice(0, 1000);
}

interface Item<S extends DescMessage> {
  readonly m: JsMsg;
  readonly eventId: string;
  readonly event: MessageShape<S>;
  readonly meta: EventMeta;
  readonly trace: RequestContext;
}

/**
 * Declares the durable consumer (idempotent) and starts handling. Rejects for
 * a bad durable name or an event type without a subject.
 */
export async function startConsumer<S extends DescMessage>(rt: ConsumerRuntime, options: ConsumerOptions<S>): Promise<RunningConsumer> {
  const { durable } = options;
  if (!isId(durable)) throw new Error(`durable "${durable}" must be ${ID_RULE}`);
  const subject = eventSubject(options.schema);
  const settings = consumerSettings(options);
  const log = rt.log.child({ consumer: durable });

  await ensureConsumer(rt.jsm, EVENTS_STREAM, {
    durable_name: durable,
    filter_subject: subject,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(settings.ackWaitMs),
    max_deliver: -1, // counted here, so outages do not exhaust it (see module comment)
    max_ack_pending: 1000,
  });
  const consumer = await rt.js.consumers.get(EVENTS_STREAM, durable);
  // A consumer or stream deleted under us ends the loop (and turns /readyz
  // false) instead of polling for a durable that will never come back.
  const messages = await consumer.consume({ max_messages: Math.max(2, settings.concurrency * settings.batchSize), abort_on_missing_resource: true });

  const handleBatch = createBatchHandler({ ...rt, log }, options, settings);
  const arrivals = collectArrivals(messages);
  let stopping: Promise<void> | undefined;
  let died: unknown;
  const running = new Set<Promise<void>>();
  const loop = dispatch(arrivals, settings, handleBatch, running, log)
    .then(() => {
      if (stopping === undefined) throw new Error("the message stream ended");
    })
    .catch((err: unknown) => {
      died = err;
      log.error({ err: String(err) }, "event consumer stopped");
    });

  return {
    durable,
    get alive() {
      return died === undefined;
    },
    stop: () =>
      (stopping ??= (async () => {
        await messages.close();
        await loop;
        await Promise.allSettled([...running]);
      })()),
  };
}

/** Messages moved off the consumer's iterator as they arrive. */
interface Arrivals {
  readonly arrived: JsMsg[];
  /** Whether the iterator has ended (closed, or failed: see `failure`). */
  ended(): boolean;
  readonly failure: () => unknown;
  /** Resolves when a message arrives or the iterator ends. */
  next(): Promise<void>;
  /** Settles when the iterator has ended. */
  readonly done: Promise<void>;
}

/**
 * Moves messages off the iterator as they arrive, so a batch can take exactly
 * what has arrived. Asking the iterator (`getPending()`) is not safe: it also
 * counts the client's queued pull requests, and then `next()` blocks holding a
 * half-built batch until more events come (the tail of a burst waited for the
 * ack wait's redelivery).
 */
function collectArrivals(messages: AsyncIterable<JsMsg>): Arrivals {
  const arrived: JsMsg[] = [];
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const signal = () => {
    wake?.();
    wake = undefined;
  };
  const done = (async () => {
    for await (const m of messages) {
      arrived.push(m);
      signal();
    }
  })()
    .catch((err: unknown) => void (failure = err))
    .finally(() => {
      ended = true;
      signal();
    });
  return {
    arrived,
    ended: () => ended,
    failure: () => failure,
    next: () => new Promise<void>((resolve) => (wake = resolve)),
    done,
  };
}

/**
 * Takes batches of what has arrived while fewer than `concurrency` are being
 * handled; resolves once the messages have ended and rejects with the
 * iterator's failure, if any.
 */
async function dispatch(
  arrivals: Arrivals,
  settings: ConsumerSettings,
  handleBatch: (batch: JsMsg[]) => Promise<void>,
  running: Set<Promise<void>>,
  log: Logger,
): Promise<void> {
  let slots = settings.concurrency;
  let freed: (() => void) | undefined;
  for (;;) {
    while (slots === 0) await new Promise<void>((resolve) => (freed = resolve));
    while (arrivals.arrived.length === 0 && !arrivals.ended()) await arrivals.next();
    if (arrivals.arrived.length === 0) break;
    const batch = arrivals.arrived.splice(0, settings.batchSize);
    slots--;
    const p = handleBatch(batch)
      .catch((err: unknown) => log.error({ err: String(err) }, "event consumer failed"))
      .finally(() => {
        slots++;
        running.delete(p);
        freed?.();
        freed = undefined;
      });
    running.add(p);
  }
  await arrivals.done;
  if (arrivals.failure() !== undefined) throw arrivals.failure();
}

/**
 * What a batch of messages goes through: each is prepared (settled at once if
 * it needs no handler), then the rest run in one transaction, or one each if
 * the batch fails.
 */
function createBatchHandler<S extends DescMessage>(
  rt: ConsumerRuntime,
  options: ConsumerOptions<S>,
  settings: ConsumerSettings,
): (batch: JsMsg[]) => Promise<void> {
  const { db, js, log } = rt;
  const { schema, durable, handle } = options;
  const { maxDeliver, backoff } = settings;
  /** Last failure of each stream sequence seen here; bounded. */
  const lastFailure = new Map<number, Failure>();
  /** Event ids being handled here now, resolving to whether it succeeded. */
  const inFlight = new Map<string, Promise<boolean>>();

  const deadLetter = async (m: JsMsg, eventId: string, error: string) => {
    const h = deadLetterHeaders(m, eventId, durable, error);
    try {
      // Same id if this repeats after a crash: stored once.
      await js.publish(`${DLQ_SUBJECT_PREFIX}${durable}`, m.data, { msgID: `${durable}.${m.seq}`, headers: h });
    } catch (err) {
      log.warn({ seq: m.seq, err: String(err) }, "could not dead-letter; will retry");
      m.nak(backoff[0]);
      return;
    }
    m.term(oneLine(error).slice(0, 200));
    lastFailure.delete(m.seq);
    log.error({ seq: m.seq, eventId, deliveries: m.info.deliveryCount, error: oneLine(error) }, "event dead-lettered");
  };

  /** Settles what needs no handler (duplicate in flight, undecodable, out of deliveries); else the work item. */
  const prepare = async (m: JsMsg): Promise<Item<S> | undefined> => {
    const eventId = eventIdOf(m);
    const earlier = inFlight.get(eventId);
    if (earlier !== undefined && (await earlier)) {
      m.ack(); // redelivered while its first delivery ran here, which succeeded
      return undefined;
    }
    let event: MessageShape<S>;
    try {
      event = fromBinary(schema, m.data);
    } catch (err) {
      await deadLetter(m, eventId, `cannot decode ${schema.typeName}: ${(err as Error).message}`);
      return undefined;
    }
    const over = overDelivered(m.info.deliveryCount, settings, lastFailure.get(m.seq));
    if (over !== undefined) {
      await deadLetter(m, eventId, over);
      return undefined;
    }
    const meta = eventMeta(m, eventId);
    const trace = requestContextFrom((name) => (name === "traceparent" ? (meta.traceparent ?? null) : null), undefined);
    return { m, eventId, event, meta, trace };
  };

  const track = (items: readonly Item<S>[], attempt: Promise<unknown>) => {
    const ok = attempt.then(
      () => true,
      () => false,
    );
    for (const i of items) inFlight.set(i.eventId, ok);
  };
  const untrack = (items: readonly Item<S>[]) => {
    for (const i of items) inFlight.delete(i.eventId);
  };
  const remember = (seq: number, failure: Failure) => {
    if (lastFailure.size > FAILURES_KEPT) lastFailure.delete(lastFailure.keys().next().value!);
    lastFailure.set(seq, failure);
  };

  /** One event in its own transaction; failures retried with backoff, then dead-lettered. */
  const runSingle = async (item: Item<S>) => {
    const { m, eventId, event, meta, trace } = item;
    const attempt = db.tx(async (tx) => {
      const fresh = await tx`
        insert into platform.processed_events (consumer, event_id) values (${durable}, ${eventId})
        on conflict do nothing returning 1`;
      if (fresh.length > 0) await runEventHandler(trace, meta, durable, () => handle(event, meta, tx));
    });
    track([item], attempt);
    try {
      await attempt;
      m.ack();
      lastFailure.delete(m.seq);
    } catch (err) {
      const transient = isTransient(err);
      const message = err instanceof Error ? err.message : String(err);
      remember(m.seq, { message, transient });
      if (!transient && meta.deliveryCount >= maxDeliver) {
        await deadLetter(m, eventId, message);
        return;
      }
      log.warn({ seq: m.seq, eventId, deliveries: meta.deliveryCount, transient, err: message }, "event handler failed; will retry");
      m.nak(retryDelay(backoff, meta.deliveryCount));
    } finally {
      untrack([item]);
    }
  };

  /**
   * Several events already waiting, in one transaction: one commit instead of
   * one per event (commits are what bounds a consumer's rate). If anything
   * in it fails, it is rolled back and each event runs alone, so one bad
   * event costs only itself.
   */
  const runBatch = async (items: Item<S>[]) => {
    const ids = [...new Set(items.map((i) => i.eventId))].sort(); // one lock order for all batches
    const attempt = db.tx(async (tx) => {
      const fresh = new Set(
        (
          await tx<{ event_id: string }[]>`
            insert into platform.processed_events (consumer, event_id)
            select ${durable}, unnest(${ids}::text[])
            on conflict do nothing returning event_id`
        ).map((r) => r.event_id),
      );
      for (const i of items) {
        if (!fresh.delete(i.eventId)) continue; // handled before, or twice in this batch
        await runEventHandler(i.trace, i.meta, durable, () => handle(i.event, i.meta, tx));
      }
    });
    track(items, attempt);
    try {
      await attempt;
      for (const i of items) {
        i.m.ack();
        lastFailure.delete(i.m.seq);
      }
    } catch (err) {
      untrack(items);
      if (isTransient(err)) {
        for (const i of items) {
          lastFailure.set(i.m.seq, { message: err instanceof Error ? err.message : String(err), transient: true });
          i.m.nak(backoff[0]);
        }
        return;
      }
      for (const i of items) await runSingle(i);
      return;
    }
    untrack(items);
  };

  return async (batch) => {
    const items: Item<S>[] = [];
    for (const m of batch) {
      const item = await prepare(m);
      if (item !== undefined) items.push(item);
    }
    if (items.length === 1) await runSingle(items[0]!);
    else if (items.length > 1) await runBatch(items);
  };
}

/** What a handler learns about a delivery besides its payload. */
function eventMeta(m: JsMsg, eventId: string): EventMeta {
  const occurred = Number(m.headers?.get(H.OCCURRED_AT));
  return {
    eventId,
    subject: m.subject,
    deliveryCount: m.info.deliveryCount,
    occurredAt: new Date(Number.isFinite(occurred) && occurred > 0 ? occurred : Number(m.info.timestampNanos / 1e6)),
    traceparent: m.headers?.get(H.TRACEPARENT) || undefined,
  };
}

/** The dead letter's headers: the original ones (but its Nats-Msg-Id), and why, where and when it died. */
function deadLetterHeaders(m: JsMsg, eventId: string, durable: string, error: string) {
  const h = natsHeaders();
  for (const key of m.headers?.keys() ?? []) {
    if (key === H.MSG_ID) continue;
    for (const v of m.headers!.values(key)) h.append(key, v);
  }
  h.set(H.EVENT_ID, eventId);
  h.set(H.DLQ_CONSUMER, durable);
  h.set(H.DLQ_SUBJECT, m.subject);
  h.set(H.DLQ_ERROR, oneLine(error));
  h.set(H.DLQ_DELIVERIES, String(m.info.deliveryCount));
  h.set(H.DLQ_STREAM_SEQ, String(m.seq));
  h.set(H.DLQ_AT, String(Date.now()));
  return h;
}

function isTransient(err: unknown): boolean {
  if (err instanceof ConnectError) return err.code === Code.Unavailable;
  return isDatabaseUnavailable(err) || isNatsUnavailable(err);
}
