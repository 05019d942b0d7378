/**
 * The outbox relay: publishes committed outbox rows to JetStream and marks
 * them sent.
 *
 * Why polling plus an in-process nudge, not LISTEN/NOTIFY: the embedded
 * PostgreSQL (PGlite behind a socket) delivers no notifications to other
 * connections, and a LISTEN connection is one more thing to lose and re-arm
 * across database restarts. A transaction opened with `Database.tx` nudges
 * the relay right after it commits (no delay for the common case); a poll
 * every `pollMs` picks up everything else (rows written by another process
 * or in `sql.begin`, rows whose claim expired after a crash). One indexed
 * query per poll is a negligible cost.
 *
 * Several processes may relay the same outbox: a batch is claimed with
 * `FOR UPDATE SKIP LOCKED` and a lease (`claimed_until`), so each row goes to
 * one relay at a time, and no transaction is held open while publishing. A
 * crash after publishing but before marking leaves the row to be published
 * again once its lease ends; JetStream drops the repeat because its
 * `Nats-Msg-Id` is the row id and the lease is shorter than the stream's
 * duplicate window, and consumers skip event ids they already handled.
 */
import type { JetStreamClient } from "@nats-io/jetstream";
import { headers, type NatsConnection } from "@nats-io/nats-core";
import type { Sql } from "postgres";
import type { Logger } from "../log.js";
import { isNatsConnected } from "../nats/connection.js";
import { tracePublish } from "../telemetry/tracing.js";
import { EVENT_ID, EVENT_TYPE, OCCURRED_AT, TRACEPARENT } from "./headers.js";

/** Relay tuning and its test seam. */
export interface RelayOptions {
  readonly sql: Sql;
  readonly js: JetStreamClient;
  readonly nc: NatsConnection;
  readonly log: Logger;
  /** Rows per batch (default 256). */
  readonly batchSize?: number;
  /** Milliseconds between polls when not nudged (default 250). */
  readonly pollMs?: number;
  /** Milliseconds a claimed batch belongs to this relay (default 15000). */
  readonly claimMs?: number;
  /** Milliseconds to wait for JetStream's acknowledgement (default 5000). */
  readonly publishTimeoutMs?: number;
  /**
   * Fault injection for tests: awaited after a batch is claimed and after it
   * is published (before it is marked sent); a test process can stop there.
   */
  readonly onStage?: (stage: "claimed" | "published", ids: readonly string[]) => void | Promise<void>;
}

/** A running relay. */
export interface Relay {
  /** Asks for a publish pass now (after a commit that wrote the outbox). */
  kick(): void;
  /** Finishes the batch in hand and stops. */
  stop(): Promise<void>;
}

interface OutboxRow {
  id: string;
  seq: string;
  subject: string;
  type_name: string;
  payload: Buffer;
  traceparent: string | null;
  created_at: Date;
}

const PRUNE_EVERY_MS = 60_000;

/** Starts relaying; see the module comment. */
export function startRelay(options: RelayOptions): Relay {
  const { sql, js, nc, log } = options;
  const batchSize = options.batchSize ?? 256;
  const pollMs = options.pollMs ?? 250;
  const claimMs = options.claimMs ?? 15_000;
  const publishTimeoutMs = options.publishTimeoutMs ?? 5000;
  let dirty = true;
  let stopped = false;
  let wake: (() => void) | undefined;
  let lastPrune = 0;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      }
      wake = done;
    });

  const batch = async (): Promise<number> => {
    const rows = await sql<OutboxRow[]>`
      update platform.outbox o
         set claimed_until = clock_timestamp() + ${claimMs} * interval '1 millisecond'
       where o.id in (
         select id from platform.outbox
          where sent_at is null and (claimed_until is null or claimed_until < clock_timestamp())
          order by seq
          limit ${batchSize}
          for update skip locked)
      returning o.id, o.seq, o.subject, o.type_name, o.payload, o.traceparent, o.created_at`;
    if (rows.length === 0) return 0;
    rows.sort((a, b) => Number(a.seq) - Number(b.seq));
    const ids = rows.map((r) => r.id);
    await options.onStage?.("claimed", ids);
    // Issued in order on one connection, so JetStream stores them in seq order.
    const results = await Promise.allSettled(
      rows.map((r) => {
        const h = headers();
        h.set(EVENT_ID, r.id);
        h.set(EVENT_TYPE, r.type_name);
        h.set(OCCURRED_AT, String(r.created_at.getTime()));
        if (r.traceparent) h.set(TRACEPARENT, r.traceparent);
        return tracePublish(r.subject, r.traceparent, r.id, () => js.publish(r.subject, r.payload, { msgID: r.id, headers: h, timeout: publishTimeoutMs }));
      }),
    );
    const sent = ids.filter((_, i) => results[i]!.status === "fulfilled");
    const failed = ids.filter((_, i) => results[i]!.status === "rejected");
    await options.onStage?.("published", sent);
    if (sent.length > 0) {
      await sql`update platform.outbox set sent_at = clock_timestamp(), claimed_until = null where id in ${sql(sent)}`;
    }
    if (failed.length > 0) {
      const first = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      log.warn({ failed: failed.length, err: String(first.reason) }, "outbox relay could not publish; will retry");
      // Release the claim so the next pass (here or elsewhere) retries at once.
      await sql`update platform.outbox set claimed_until = null where id in ${sql(failed)} and sent_at is null`;
      throw first.reason;
    }
    return rows.length;
  };

  const prune = async () => {
    lastPrune = Date.now();
    await sql`
      delete from platform.outbox where id in (
        select id from platform.outbox where sent_at < clock_timestamp() - interval '1 day' limit 5000)`;
    await sql`
      delete from platform.processed_events where (consumer, event_id) in (
        select consumer, event_id from platform.processed_events
         where processed_at < clock_timestamp() - interval '30 days' limit 5000)`;
  };

  const loop = (async () => {
    let failures = 0;
    while (!stopped) {
      if (!dirty) await sleep(failures > 0 ? Math.min(5000, pollMs * 2 ** failures) : pollMs);
      if (stopped) break;
      dirty = false;
      if (!isNatsConnected(nc)) continue;
      try {
        if (Date.now() - lastPrune > PRUNE_EVERY_MS) await prune();
        const n = await batch();
        if (n === batchSize) dirty = true;
        failures = 0;
      } catch (err) {
        failures = Math.min(failures + 1, 6);
        if (failures === 1) log.warn({ err: String(err) }, "outbox relay pass failed; retrying with backoff");
      }
    }
  })();

  return {
    kick() {
      dirty = true;
      wake?.();
    },
    async stop() {
      stopped = true;
      wake?.();
      await loop;
    },
  };
}
