/**
 * The outbox relay: publishes committed outbox rows to JetStream and marks
 * them sent.
 *
 * Three ways a row reaches JetStream, fastest first:
 *
 * 1. Straight after its commit, from the process that wrote it. A row
 *    written in `Database.tx` of a process that runs a relay is inserted
 *    already claimed by that relay (`claimed_until`, see events.ts), and the
 *    transaction's commit hook hands the row, still in memory, to `send`:
 *    no query before the publish, and the rows of many commits are marked
 *    sent in one UPDATE. Nothing polls for it.
 * 2. On a notification: rows written otherwise (in `sql.begin`, or in a
 *    process that runs no relay) come with `pg_notify('${OUTBOX_CHANNEL}')` in
 *    their transaction, and every relay LISTENs, so the next pass starts as
 *    the transaction commits, in whichever process.
 * 3. A poll every `pollMs`, the safety net: rows whose notification was
 *    lost (a LISTEN connection being re-established; the embedded PGlite
 *    delivers none), and rows whose claim lapsed because the process that
 *    held it died before marking them sent.
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
import type { NatsConnection } from "@nats-io/nats-core";
import type { Sql } from "postgres";
import type { Logger } from "../log.js";
import { isNatsConnected } from "../nats/connection.js";
import { tracePublish } from "../telemetry/tracing.js";
import { eventHeaders } from "./headers.js";

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

/** The notification channel a transaction that wrote the outbox without a local relay notifies. */
export const OUTBOX_CHANNEL = "switchyard_outbox";

/** An outbox row as written, for the direct path. */
export interface CommittedRow {
  readonly id: string;
  readonly subject: string;
  readonly type_name: string;
  readonly payload: Uint8Array;
  readonly traceparent: string | null;
  readonly created_at: Date;
}

/** A running relay. */
export interface Relay {
  /** Milliseconds a row inserted already claimed for `send` stays claimed. */
  readonly claimMs: number;
  /** Publishes a committed row this relay already holds the claim of (way 1 in the module comment). */
  send(row: CommittedRow): void;
  /** Asks for a publish pass now. */
  kick(): void;
  /** Finishes the batch in hand and the rows sent, and stops. */
  stop(): Promise<void>;
}

interface OutboxRow {
  id: string;
  seq: string;
  subject: string;
  type_name: string;
  payload: Uint8Array;
  traceparent: string | null;
  created_at: Date;
}

const PRUNE_EVERY_MS = 60_000;

/**
 * Joined into the relay's bookkeeping UPDATEs: their own one-statement
 * transaction commits without waiting for the WAL flush. Losing one in a
 * database crash costs only a repeat publish after the claim lapses, which
 * JetStream (Nats-Msg-Id) and consumers (processed_events) drop; waiting
 * for it cost a flush per batch, the same flushes the writers' and the
 * consumers' commits queue for.
 */
const NO_FLUSH_WAIT = "(select set_config('synchronous_commit', 'off', true)) as no_flush_wait";

/**
 * Records rows as published (see NO_FLUSH_WAIT). The ids travel as one array
 * parameter: one statement text (prepared once per connection) whatever the
 * batch size, where `in (…)` made a new one, with its extra round trip, per size.
 */
async function markSent(sql: Sql, ids: readonly string[]): Promise<void> {
  await sql`
    update platform.outbox set sent_at = clock_timestamp(), claimed_until = null
      from ${sql.unsafe(NO_FLUSH_WAIT)} where id = any(${ids as string[]}::uuid[])`;
}

/** Gives up this relay's claim on rows it could not publish, for the next pass to retry (see NO_FLUSH_WAIT). */
async function releaseClaims(sql: Sql, ids: readonly string[]): Promise<void> {
  await sql`
    update platform.outbox set claimed_until = null
      from ${sql.unsafe(NO_FLUSH_WAIT)} where id = any(${ids as string[]}::uuid[]) and sent_at is null`;
}

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

  const publishRow = (r: CommittedRow) => {
    const h = eventHeaders(r.id, r.type_name, r.created_at.getTime(), r.traceparent);
    return tracePublish(r.subject, r.traceparent, r.id, () => js.publish(r.subject, r.payload, { msgID: r.id, headers: h, timeout: publishTimeoutMs }));
  };

  const direct = createDirectPath({ sql, nc, log, onStage: options.onStage, publish: publishRow, retry: () => kick() });

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
    const results = await Promise.allSettled(rows.map(publishRow));
    const sent = ids.filter((_, i) => results[i]!.status === "fulfilled");
    const failed = ids.filter((_, i) => results[i]!.status === "rejected");
    await options.onStage?.("published", sent);
    if (sent.length > 0) {
      await markSent(sql, sent);
    }
    if (failed.length > 0) {
      const first = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      log.warn({ failed: failed.length, err: String(first.reason) }, "outbox relay could not publish; will retry");
      // Release the claim so the next pass (here or elsewhere) retries at once.
      await releaseClaims(sql, failed);
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

  const kick = () => {
    dirty = true;
    wake?.();
  };
  // Rows other processes (or sql.begin) commit: a pass as soon as they do.
  // postgres re-listens by itself after a reconnect; until then, the poll.
  const listening = sql.listen(OUTBOX_CHANNEL, kick, kick).catch((err: unknown) => {
    log.warn({ err: String(err) }, "cannot LISTEN for outbox notifications; relying on the poll");
    return undefined;
  });

  return {
    claimMs,
    send: direct.send,
    kick,
    async stop() {
      stopped = true;
      wake?.();
      await loop;
      await direct.settle();
      // UNLISTEN travels on the listening connection, which may be reconnecting to a host that is gone
      // (a failed-over primary): closing the pool ends it anyway, so it is not awaited past a moment.
      const unlistened = (await listening)?.unlisten().catch(() => undefined);
      await Promise.race([unlistened, new Promise((r) => setTimeout(r, 1000).unref())]);
    },
  };
}

interface DirectPathOptions {
  readonly sql: Sql;
  readonly nc: NatsConnection;
  readonly log: Logger;
  readonly onStage: RelayOptions["onStage"];
  readonly publish: (row: CommittedRow) => Promise<unknown>;
  /** Asks the claiming path to try rows this path gave up. */
  readonly retry: () => void;
}

/**
 * Way 1 of the module comment: publishes rows handed over at commit, then
 * marks them sent in batches (one UPDATE in flight at a time, taking all
 * that finished meanwhile). Rows committed in the same turn of the event
 * loop are published together: their publishes leave in one write to NATS
 * and their acknowledgements are awaited together, not one after another.
 * A row that cannot be published has its claim released so the claiming
 * path retries it at once; a row whose marking fails stays claimed and is
 * published again, deduplicated, after its lease.
 */
function createDirectPath(o: DirectPathOptions) {
  const toMark: string[] = [];
  const toRelease: string[] = [];
  const queued: CommittedRow[] = [];
  let flushing: NodeJS.Immediate | undefined;
  let writing: Promise<void> | undefined;
  const inFlight = new Set<Promise<void>>();

  const write = () =>
    (writing ??= (async () => {
      try {
        while (toMark.length > 0 || toRelease.length > 0) {
          const sent = toMark.splice(0, 1000);
          const released = toRelease.splice(0, 1000);
          if (sent.length > 0) {
            await markSent(o.sql, sent);
          }
          if (released.length > 0) {
            await releaseClaims(o.sql, released);
            o.retry();
          }
        }
      } catch (err) {
        o.log.warn({ err: String(err) }, "outbox relay could not record published rows; they are published again, deduplicated, after their claim lapses");
      } finally {
        writing = undefined;
      }
    })());

  const publishAll = async (rows: readonly CommittedRow[]) => {
    const ids = rows.map((r) => r.id);
    await o.onStage?.("claimed", ids);
    // Issued in commit order in one turn, so they leave in one write and JetStream stores them in that order.
    const results = isNatsConnected(o.nc)
      ? await Promise.allSettled(rows.map((r) => o.publish(r)))
      : rows.map((): PromiseSettledResult<unknown> => ({ status: "rejected", reason: new Error("NATS is not connected") }));
    const sent = ids.filter((_, i) => results[i]!.status === "fulfilled");
    const failed = ids.filter((_, i) => results[i]!.status === "rejected");
    if (failed.length > 0) {
      const first = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      o.log.warn({ failed: failed.length, err: String(first.reason) }, "outbox relay could not publish at commit; the claiming path retries");
      toRelease.push(...failed);
    }
    if (sent.length > 0) {
      await o.onStage?.("published", sent);
      toMark.push(...sent);
    }
    void write();
  };

  const flush = () => {
    flushing = undefined;
    if (queued.length === 0) return;
    const p = publishAll(queued.splice(0))
      .catch((err: unknown) => o.log.warn({ err: String(err) }, "outbox relay could not publish at commit; the claiming path retries after the claim lapses"))
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  return {
    send(row: CommittedRow) {
      queued.push(row);
      flushing ??= setImmediate(flush);
    },
    /** Waits for the rows in hand to be published and recorded. */
    async settle() {
      if (flushing !== undefined) clearImmediate(flushing);
      flush();
      await Promise.allSettled([...inFlight]);
      await writing;
    },
  };
}
