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

interface Item<S extends DescMessage> {
  readonly m: JsMsg;
  readonly eventId: string;
  readonly event: MessageShape<S>;
  readonly meta: EventMeta;
  readonly trace: RequestContext;
}
const DEFAULT_BACKOFF = [1000, 5000, 15_000, 30_000, 60_000];

/** A started consumer. */
export interface RunningConsumer {
  readonly durable: string;
  /** False once its loop has died (its message stream failed or ended) without being stopped: `/readyz` says so. */
  readonly alive: boolean;
  /** Stops taking messages and waits for the handlers in progress. */
  stop(): Promise<void>;
}

/**
 * Declares the durable consumer (idempotent) and starts handling. Rejects for
 * a bad durable name or an event type without a subject.
 */
export async function startConsumer<S extends DescMessage>(rt: ConsumerRuntime, options: ConsumerOptions<S>): Promise<RunningConsumer> {
  const { db, js, jsm } = rt;
  const { schema, durable, handle } = options;
  if (!isId(durable)) throw new Error(`durable "${durable}" must be ${ID_RULE}`);
  const subject = eventSubject(schema);
  const maxDeliver = Math.max(1, options.maxDeliver ?? 5);
  const ackWaitMs = options.ackWaitMs ?? 30_000;
  const backoff = options.backoffMs?.length ? options.backoffMs : DEFAULT_BACKOFF;
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const batchSize = Math.max(1, options.batchSize ?? 32);
  const log = rt.log.child({ consumer: durable });

  await ensureConsumer(jsm, EVENTS_STREAM, {
    durable_name: durable,
    filter_subject: subject,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ackWaitMs),
    max_deliver: -1, // counted here, so outages do not exhaust it (see module comment)
    max_ack_pending: 1000,
  });
  const consumer = await js.consumers.get(EVENTS_STREAM, durable);
  // A consumer or stream deleted under us ends the loop (and turns /readyz
  // false) instead of polling for a durable that will never come back.
  const messages = await consumer.consume({ max_messages: Math.max(2, concurrency * batchSize), abort_on_missing_resource: true });

  /** Last failure of each stream sequence seen here; bounded. */
  const lastFailure = new Map<number, { message: string; transient: boolean }>();
  /** Event ids being handled here now, resolving to whether it succeeded. */
  const inFlight = new Map<string, Promise<boolean>>();
  const running = new Set<Promise<void>>();
  let slots = concurrency;
  let freed: (() => void) | undefined;

  const deadLetter = async (m: JsMsg, eventId: string, error: string) => {
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
    const deliveries = m.info.deliveryCount;
    const eventId = m.headers?.get(H.EVENT_ID) || m.headers?.get(H.MSG_ID) || `${m.info.stream}.${m.seq}`;
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
    const previous = lastFailure.get(m.seq);
    if (deliveries > maxDeliver && !previous?.transient) {
      await deadLetter(
        m,
        eventId,
        previous?.message ??
          `no acknowledgement after ${deliveries - 1} deliveries (the handler ran longer than the ack wait of ${ackWaitMs} ms, or its process stopped)`,
      );
      return undefined;
    }
    const occurred = Number(m.headers?.get(H.OCCURRED_AT));
    const traceparent = m.headers?.get(H.TRACEPARENT) || undefined;
    const meta: EventMeta = {
      eventId,
      subject: m.subject,
      deliveryCount: deliveries,
      occurredAt: new Date(Number.isFinite(occurred) && occurred > 0 ? occurred : Number(m.info.timestampNanos / 1e6)),
      traceparent,
    };
    const trace = requestContextFrom((name) => (name === "traceparent" ? (traceparent ?? null) : null), undefined);
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
      if (lastFailure.size > 10_000) lastFailure.delete(lastFailure.keys().next().value!);
      lastFailure.set(m.seq, { message, transient });
      if (!transient && meta.deliveryCount >= maxDeliver) {
        await deadLetter(m, eventId, message);
        return;
      }
      log.warn({ seq: m.seq, eventId, deliveries: meta.deliveryCount, transient, err: message }, "event handler failed; will retry");
      m.nak(backoff[Math.min(meta.deliveryCount, backoff.length) - 1]);
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

  const handleBatch = async (batch: JsMsg[]) => {
    const items: Item<S>[] = [];
    for (const m of batch) {
      const item = await prepare(m);
      if (item !== undefined) items.push(item);
    }
    if (items.length === 1) await runSingle(items[0]!);
    else if (items.length > 1) await runBatch(items);
  };

  // Messages are moved off the iterator as they arrive, so a batch can take
  // exactly what has arrived. Asking the iterator (`getPending()`) is not
  // safe: it also counts the client's queued pull requests, and then
  // `next()` blocks holding a half-built batch until more events come (the
  // tail of a burst waited for the ack wait's redelivery).
  const arrived: JsMsg[] = [];
  let stopping: Promise<void> | undefined;
  let died: unknown;
  let ended = false;
  let failure: unknown;
  let wakeLoop: (() => void) | undefined;
  const signal = () => {
    wakeLoop?.();
    wakeLoop = undefined;
  };
  const pump = (async () => {
    for await (const m of messages) {
      arrived.push(m);
      signal();
    }
  })()
    .catch((err: unknown) => (failure = err))
    .finally(() => {
      ended = true;
      signal();
    });

  const loop = (async () => {
    for (;;) {
      while (slots === 0) await new Promise<void>((resolve) => (freed = resolve));
      while (arrived.length === 0 && !ended) await new Promise<void>((resolve) => (wakeLoop = resolve));
      if (arrived.length === 0) break;
      const batch = arrived.splice(0, batchSize);
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
    await pump;
    if (failure !== undefined) throw failure;
    if (stopping === undefined) throw new Error("the message stream ended");
  })().catch((err: unknown) => {
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

function isTransient(err: unknown): boolean {
  if (err instanceof ConnectError) return err.code === Code.Unavailable;
  return isDatabaseUnavailable(err) || isNatsUnavailable(err);
}

/** NATS header values cannot hold line breaks; keep errors short. */
function oneLine(s: string): string {
  return s.replace(/[\r\n\t\0]+/g, " ").slice(0, 1000);
}
