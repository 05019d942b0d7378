/**
 * A durable JetStream consumer running one event type's handler.
 *
 * - Explicit acks, acknowledged only after the handler's transaction commits.
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
 * - The handler runs in the trace of the request that caused the event.
 */
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { headers as natsHeaders, nanos } from "@nats-io/nats-core";
import type { Logger } from "../log.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import type { Database } from "../db/types.js";
import { isNatsUnavailable } from "../nats/errors.js";
import { ensureConsumer } from "../nats/streams.js";
import { requestContextFrom, runWithRequest } from "../request-context.js";
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

const durablePattern = /^[A-Za-z0-9_-]{1,64}$/;
const DEFAULT_BACKOFF = [1000, 5000, 15_000, 30_000, 60_000];

/**
 * Declares the durable consumer (idempotent) and starts handling; resolves
 * with a function that stops taking messages and waits for the handlers in
 * progress. Rejects for a bad durable name or an event type without a subject.
 */
export async function startConsumer<S extends DescMessage>(rt: ConsumerRuntime, options: ConsumerOptions<S>): Promise<() => Promise<void>> {
  const { db, js, jsm } = rt;
  const { schema, durable, handle } = options;
  if (!durablePattern.test(durable)) throw new Error(`durable "${durable}" must be 1 to 64 letters, digits, "_" or "-"`);
  const subject = eventSubject(schema);
  const maxDeliver = Math.max(1, options.maxDeliver ?? 5);
  const ackWaitMs = options.ackWaitMs ?? 30_000;
  const backoff = options.backoffMs?.length ? options.backoffMs : DEFAULT_BACKOFF;
  const concurrency = Math.max(1, options.concurrency ?? 4);
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
  const messages = await consumer.consume({ max_messages: Math.max(2, concurrency * 2) });

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

  const handleOne = async (m: JsMsg) => {
    const deliveries = m.info.deliveryCount;
    const eventId = m.headers?.get(H.EVENT_ID) || m.headers?.get(H.MSG_ID) || `${m.info.stream}.${m.seq}`;
    const earlier = inFlight.get(eventId);
    if (earlier !== undefined && (await earlier)) {
      m.ack(); // redelivered while its first delivery ran here, which succeeded
      return;
    }
    let event: MessageShape<S>;
    try {
      event = fromBinary(schema, m.data);
    } catch (err) {
      await deadLetter(m, eventId, `cannot decode ${schema.typeName}: ${(err as Error).message}`);
      return;
    }
    const previous = lastFailure.get(m.seq);
    if (deliveries > maxDeliver && !previous?.transient) {
      await deadLetter(
        m,
        eventId,
        previous?.message ??
          `no acknowledgement after ${deliveries - 1} deliveries (the handler ran longer than the ack wait of ${ackWaitMs} ms, or its process stopped)`,
      );
      return;
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
    const attempt = runWithRequest(trace, () =>
      db.tx(async (tx) => {
        const fresh = await tx`
          insert into platform.processed_events (consumer, event_id) values (${durable}, ${eventId})
          on conflict do nothing returning 1`;
        if (fresh.length > 0) await handle(event, meta, tx);
      }),
    );
    inFlight.set(
      eventId,
      attempt.then(
        () => true,
        () => false,
      ),
    );
    try {
      await attempt;
      m.ack();
      lastFailure.delete(m.seq);
    } catch (err) {
      const transient = isTransient(err);
      const message = err instanceof Error ? err.message : String(err);
      if (lastFailure.size > 10_000) lastFailure.delete(lastFailure.keys().next().value!);
      lastFailure.set(m.seq, { message, transient });
      if (!transient && deliveries >= maxDeliver) {
        await deadLetter(m, eventId, message);
        return;
      }
      log.warn({ seq: m.seq, eventId, deliveries, transient, err: message }, "event handler failed; will retry");
      m.nak(backoff[Math.min(deliveries, backoff.length) - 1]);
    } finally {
      inFlight.delete(eventId);
    }
  };

  const loop = (async () => {
    for await (const m of messages) {
      while (slots === 0) await new Promise<void>((resolve) => (freed = resolve));
      slots--;
      const p = handleOne(m)
        .catch((err: unknown) => log.error({ err: String(err) }, "event consumer failed"))
        .finally(() => {
          slots++;
          running.delete(p);
          freed?.();
          freed = undefined;
        });
      running.add(p);
    }
  })().catch((err: unknown) => log.error({ err: String(err) }, "event consumer stopped"));

  let stopping: Promise<void> | undefined;
  return () =>
    (stopping ??= (async () => {
      await messages.close();
      await loop;
      await Promise.allSettled([...running]);
    })());
}

function isTransient(err: unknown): boolean {
  if (err instanceof ConnectError) return err.code === Code.Unavailable;
  return isDatabaseUnavailable(err) || isNatsUnavailable(err);
}

/** NATS header values cannot hold line breaks; keep errors short. */
function oneLine(s: string): string {
  return s.replace(/[\r\n\t\0]+/g, " ").slice(0, 1000);
}
