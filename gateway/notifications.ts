/**
 * Notifications: one JetStream subject per user (`sy.notify.<user>`), whose
 * stream sequence is the notification's sequence. Publishing reads the user's
 * last sequence and publishes with it as the expected last subject sequence,
 * so `previous_sequence` in the stored message is exact and the user's stream
 * is a linked list (List walks it backwards; receivers detect gaps).
 *
 * Delivery: the stream's RePublish copies each stored notification to a core
 * subject per user; an instance subscribes (once, shared) for each user it
 * has a device connection or Subscribe stream of. Each receiver holds a
 * cursor (the last sequence it delivered): a notification whose
 * previous_sequence is beyond the cursor means some were missed, and the
 * cursor catches up from the stream (direct get next_by_subj) before
 * delivering more, so every receiver gets each kept notification in order,
 * once. No consumer is created for any of this.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { JsonObject } from "@bufbuild/protobuf";
import { structBytes } from "./codec.js";
import type { JetStreamClient, JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { randomBytes } from "node:crypto";
import { NotificationSchema, type Notification } from "../gen/switchyard/notify/v1/notify_pb.js";
import type { Logger } from "../platform/index.js";
import type { GatewayNames } from "./subjects.js";
import { userToken } from "./subjects.js";

/** What a publisher supplies. */
export interface NotificationInput {
  readonly userId: string;
  readonly title: string;
  readonly body: string;
  readonly kind: string;
  readonly data: JsonObject | undefined;
  readonly idempotencyKey: string;
}

/** A receiver attached to a user's notifications. */
export interface Attachment {
  /** The user's latest sequence when attached. */
  readonly latest: bigint;
  /** True when some notifications after the resume point are no longer kept. */
  readonly truncated: boolean;
  /** Replays what was missed, then delivers live; resolves when the replay is done. */
  start(): Promise<void>;
  /** The last sequence delivered. */
  readonly last: bigint;
  /** Stops delivery. */
  detach(): void;
}

/** Attach options. */
export interface AttachOptions {
  /** Resume point: deliver kept notifications after it. 0: only new ones. */
  readonly after: bigint;
  /** True: an `after` beyond the latest sequence is OUT_OF_RANGE (Subscribe); false: replay none (devices). */
  readonly strict: boolean;
  /** Called for each notification, in order, once. */
  deliver(n: Notification): void;
  /** Called when delivery cannot continue (catch-up failed). */
  fail(err: ConnectError): void;
}

/** The notification store and fan-out of this instance. */
export interface Notifications {
  /** Publishes; returns the stored notification (with its sequence). */
  publish(input: NotificationInput): Promise<Notification>;
  /** Attaches a receiver of `userId`'s notifications. */
  attach(userId: string, opts: AttachOptions): Promise<Attachment>;
  /** Newest first: up to `pageSize` kept notifications starting at `from` (0 = the latest); `next` is 0 when none remain. */
  list(userId: string, pageSize: number, from: bigint): Promise<{ items: Notification[]; next: bigint }>;
  /** Forgets every feed (shutdown). */
  stop(): void;
}

interface Feed {
  sub: Subscription;
  cursors: Set<Cursor>;
}

const maxDataBytes = 16 * 1024;

/** A stored-notification query of the direct get API. */
type StoreQuery = { seq: number } | { last_by_subj: string } | { next_by_subj: string; seq: number };
/** Reads one stored message (null when there is none); rejects UNAVAILABLE when the store cannot be reached. */
type StoreGet = (query: StoreQuery) => Promise<StoredMsg | null>;

/** A stored or republished notification, with its stream sequence as its sequence. */
export function decodeNotification(m: { data: Uint8Array }, seq: number): Notification {
  const n = fromBinary(NotificationSchema, m.data);
  n.sequence = BigInt(seq);
  return n;
}

/** The notification a publish stores, linked to the user's `previous` sequence. */
export function newNotification(input: NotificationInput, previous: bigint, id: string): Notification {
  return create(NotificationSchema, {
    name: `users/${input.userId}/notifications/${id}`,
    notificationId: id,
    userId: input.userId,
    previousSequence: previous,
    title: input.title,
    body: input.body,
    kind: input.kind,
    data: input.data,
    createTime: timestampNow(),
  });
}

/** Whether a stored notification says what `input` says (an idempotent repeat), `dataBytes` being input's data encoded. */
export function sameContent(stored: Notification, input: NotificationInput, dataBytes: Uint8Array): boolean {
  return stored.title === input.title && stored.body === input.body && stored.kind === input.kind && Buffer.compare(structBytes(stored.data), dataBytes) === 0;
}

/**
 * One receiver's position in a user's notifications: delivers each one after
 * `last` exactly once and in order. Live notifications that arrive while it
 * catches up from the store (or after a gap) wait in a buffer.
 */
export class Cursor {
  last: bigint;
  detached = false;
  catching = true;
  buffer: Notification[] = [];
  constructor(
    after: bigint,
    readonly opts: Pick<AttachOptions, "deliver" | "fail">,
    /** Pushes every kept notification after `last` (reading the store), until none remain. */
    private readonly catchUp: (c: Cursor) => Promise<void>,
  ) {
    this.last = after;
  }
  /** Delivers `n` if it is next; older ones are dropped (already delivered). */
  push(n: Notification): void {
    if (n.sequence <= this.last) return;
    this.last = n.sequence;
    this.opts.deliver(n);
  }
  /** A live notification. */
  offer(n: Notification): void {
    if (this.detached) return;
    if (this.catching) return void this.buffer.push(n);
    if (n.sequence <= this.last) return;
    if (n.previousSequence > this.last) {
      // A gap: some notifications did not reach us live. Fetch them first.
      this.buffer.push(n);
      void this.run();
      return;
    }
    this.push(n);
  }
  /** Catches up from the store, then delivers what was buffered meanwhile. */
  async run(): Promise<void> {
    this.catching = true;
    try {
      await this.catchUp(this);
      const buffered = this.buffer.sort((a, b) => (a.sequence < b.sequence ? -1 : 1));
      this.buffer = [];
      for (const n of buffered) this.push(n);
    } catch (err) {
      this.opts.fail(err instanceof ConnectError ? err : new ConnectError(String(err), Code.Unavailable));
    } finally {
      this.catching = false;
    }
  }
}

/** Creates the notification side of this instance. */
export function createNotifications(nc: NatsConnection, js: JetStreamClient, jsm: JetStreamManager, names: GatewayNames, log: Logger): Notifications {
  const get: StoreGet = async (query) => {
    try {
      return await jsm.direct.getMessage(names.notifyStream, query as never);
    } catch (err) {
      throw new ConnectError(`notification store unreachable: ${(err as Error).message}`, Code.Unavailable);
    }
  };
  const latestOf = async (userId: string) => BigInt((await get({ last_by_subj: names.notify(userId) }))?.seq ?? 0);
  const feeds = createFeeds(nc, names, log);
  return {
    publish: (input) => publishNotification(input, js, get, latestOf, names),
    attach: (userId, opts) => attachReceiver(userId, opts, feeds, get, latestOf, names),
    list: (userId, pageSize, from) => listNotifications(userId, pageSize, from, get, names),
    stop: () => feeds.stop(),
  };
}

/** The live side: one shared core subscription per user with receivers here, fanning out to their cursors. */
function createFeeds(nc: NatsConnection, names: GatewayNames, log: Logger) {
  const feeds = new Map<string, Feed>();
  return {
    /** Adds `cursor` to `userId`'s feed; the returned function removes it (and the feed with its last cursor). */
    join(userId: string, cursor: Cursor): () => void {
      let feed = feeds.get(userId);
      if (feed === undefined) {
        const cursors = new Set<Cursor>();
        const sub = nc.subscribe(names.notified(userId), {
          callback: (err, msg) => {
            if (err) return;
            let n: Notification;
            try {
              n = decodeNotification(msg, Number(msg.headers?.get("Nats-Sequence") ?? 0));
            } catch {
              return log.warn({ subject: msg.subject }, "undecodable notification");
            }
            for (const c of cursors) c.offer(n);
          },
        });
        feed = { sub, cursors };
        feeds.set(userId, feed);
      }
      const joined = feed;
      joined.cursors.add(cursor);
      return () => {
        joined.cursors.delete(cursor);
        if (joined.cursors.size === 0 && feeds.get(userId) === joined) {
          feeds.delete(userId);
          joined.sub.unsubscribe();
        }
      };
    },
    stop() {
      for (const f of feeds.values()) f.sub.unsubscribe();
      feeds.clear();
    },
  };
}

/**
 * Stores a notification as the user's next one (expected last subject
 * sequence = the previous one, retried when another publish wins); a repeated
 * idempotency key answers the first notification if its content is the same.
 */
async function publishNotification(
  input: NotificationInput,
  js: JetStreamClient,
  get: StoreGet,
  latestOf: (userId: string) => Promise<bigint>,
  names: GatewayNames,
): Promise<Notification> {
  const dataBytes = structBytes(input.data);
  if (dataBytes.length > maxDataBytes) throw new ConnectError(`data: must be at most ${maxDataBytes} bytes encoded`, Code.InvalidArgument);
  const subject = names.notify(input.userId);
  const msgID = input.idempotencyKey === "" ? undefined : `${userToken(input.userId)}:${input.idempotencyKey}`;
  for (let attempt = 0; attempt < 16; attempt++) {
    const previous = await latestOf(input.userId);
    const n = newNotification(input, previous, randomBytes(12).toString("base64url"));
    let ack;
    try {
      ack = await js.publish(subject, toBinary(NotificationSchema, n), { msgID, expect: { lastSubjectSequence: Number(previous) }, timeout: 5_000 });
    } catch (err) {
      if (/wrong last sequence/i.test((err as Error).message)) continue; // another publish for this user won the race
      throw new ConnectError(`notification store unreachable: ${(err as Error).message}`, Code.Unavailable);
    }
    if (!ack.duplicate) {
      n.sequence = BigInt(ack.seq);
      return n;
    }
    const first = await get({ seq: ack.seq });
    if (first === null) throw new ConnectError("idempotency_key was used and its notification is no longer kept", Code.AlreadyExists);
    const f = decodeNotification(first, first.seq);
    if (!sameContent(f, input, dataBytes)) throw new ConnectError("idempotency_key was already used with a different title, body, kind or data", Code.AlreadyExists);
    return f;
  }
  throw new ConnectError("too many concurrent publishes for this user; retry", Code.Unavailable);
}

/** Attaches a receiver: live delivery buffers at once, the resume point is checked, start() replays then goes live. */
async function attachReceiver(
  userId: string,
  opts: AttachOptions,
  feeds: ReturnType<typeof createFeeds>,
  get: StoreGet,
  latestOf: (userId: string) => Promise<bigint>,
  names: GatewayNames,
): Promise<Attachment> {
  const catchUp = async (c: Cursor) => {
    for (;;) {
      const m = await get({ next_by_subj: names.notify(userId), seq: Number(c.last) + 1 });
      if (m === null || c.detached) return;
      c.push(decodeNotification(m, m.seq));
    }
  };
  const cursor = new Cursor(opts.after, opts, catchUp);
  const leave = feeds.join(userId, cursor); // live ones buffer until start()
  const detach = () => {
    cursor.detached = true;
    leave();
  };
  let latest: bigint;
  let truncated = false;
  try {
    latest = await latestOf(userId);
    if (opts.after > latest && opts.strict) {
      throw new ConnectError(`after_sequence ${opts.after} is beyond the latest sequence ${latest}: resubscribe from 0`, Code.OutOfRange);
    }
    if (opts.after === 0n || opts.after >= latest) cursor.last = latest;
    else {
      const first = await get({ next_by_subj: names.notify(userId), seq: Number(opts.after) + 1 });
      truncated = first === null || decodeNotification(first, first.seq).previousSequence > opts.after;
    }
  } catch (err) {
    detach();
    throw err;
  }
  return {
    latest,
    truncated,
    start: () => cursor.run(),
    get last() {
      return cursor.last;
    },
    detach,
  };
}

/** Newest first, walking the user's linked list backwards from `from` (0 = the latest). */
async function listNotifications(userId: string, pageSize: number, from: bigint, get: StoreGet, names: GatewayNames): Promise<{ items: Notification[]; next: bigint }> {
  const subject = names.notify(userId);
  let m = from === 0n ? await get({ last_by_subj: subject }) : await get({ seq: Number(from) });
  const items: Notification[] = [];
  while (m !== null && m.subject === subject && items.length < pageSize) {
    const n = decodeNotification(m, m.seq);
    items.push(n);
    m = n.previousSequence === 0n ? null : await get({ seq: Number(n.previousSequence) });
  }
  const next = m !== null && m.subject === subject ? BigInt(m.seq) : 0n;
  return { items, next };
}
