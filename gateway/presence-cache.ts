/**
 * The caller's view of presence: for each user it calls recently, the user's
 * presence record, kept current without a JetStream consumer. A core
 * subscription to the user's RePublish subject (only stored writes reach it,
 * each with its revision in Nats-Sequence) is made before the first read, so
 * no change between the read and the subscription is missed; older revisions
 * are ignored. Bounded (least recently used users are dropped) and emptied
 * when the NATS connection drops, since changes may have been missed.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromBinary } from "@bufbuild/protobuf";
import type { KV } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { PresenceRecordSchema, type PresenceRecord } from "../gen/switchyard/device/v1/relay_pb.js";
import type { GatewayNames } from "./subjects.js";
import { userToken } from "./subjects.js";

interface Cached {
  revision: number;
  record: PresenceRecord;
  sub: Subscription;
  ready: Promise<void> | undefined;
  waiters: Set<() => void>;
}

/** A per-user presence cache. */
export interface PresenceCache {
  /** The user's presence record (all entries; filter liveness yourself). */
  get(userId: string): PresenceRecord | Promise<PresenceRecord>;
  /** Calls `fn` once at the next change of the user's record (or when it is dropped from the cache); returns a cancel function. */
  onChange(userId: string, fn: () => void): () => void;
  /** Forgets everything (after a reconnect: changes may have been missed). */
  clear(): void;
}

const empty = create(PresenceRecordSchema);

/** Creates a cache of at most `maxUsers` users. */
export function createPresenceCache(nc: NatsConnection, kv: KV, names: GatewayNames, maxUsers = 10_000): PresenceCache {
  const users = new Map<string, Cached>();

  const decode = (data: Uint8Array) => (data.length === 0 ? empty : fromBinary(PresenceRecordSchema, data));
  const apply = (c: Cached, revision: number, record: PresenceRecord) => {
    if (revision <= c.revision) return;
    c.revision = revision;
    c.record = record;
    for (const w of c.waiters) w();
    c.waiters.clear();
  };
  const drop = (userId: string) => {
    const c = users.get(userId);
    if (!c) return;
    users.delete(userId);
    c.sub.unsubscribe();
    for (const w of c.waiters) w();
  };

  function load(userId: string): Cached {
    const c: Cached = { revision: 0, record: empty, sub: undefined as never, ready: undefined, waiters: new Set() };
    c.sub = nc.subscribe(names.presence(userId), {
      callback: (err, msg) => {
        if (err) return;
        const revision = Number(msg.headers?.get("Nats-Sequence") ?? 0);
        const op = msg.headers?.get("KV-Operation");
        try {
          apply(c, revision, op === "DEL" || op === "PURGE" ? empty : decode(msg.data));
        } catch {
          /* a foreign value: ignore */
        }
      },
    });
    // The SUB above reaches the server before this request on the same
    // connection, so every write after the read is seen by the subscription.
    c.ready = kv.get(userToken(userId)).then(
      (e) => {
        c.ready = undefined;
        if (e !== null) apply(c, e.revision, e.operation === "PUT" ? decode(e.value) : empty);
      },
      (err: unknown) => {
        drop(userId);
        throw new ConnectError(`presence store unreachable: ${(err as Error).message}`, Code.Unavailable);
      },
    );
    users.set(userId, c);
    if (users.size > maxUsers) drop(users.keys().next().value!);
    return c;
  }

  return {
    get(userId) {
      let c = users.get(userId);
      if (c === undefined) c = load(userId);
      else {
        users.delete(userId); // most recently used last
        users.set(userId, c);
      }
      if (c.ready === undefined) return c.record;
      const cc = c;
      return c.ready.then(() => cc.record);
    },
    onChange(userId, fn) {
      const c = users.get(userId);
      if (c === undefined) {
        queueMicrotask(fn);
        return () => {};
      }
      c.waiters.add(fn);
      return () => c.waiters.delete(fn);
    },
    clear() {
      for (const userId of [...users.keys()]) drop(userId);
    },
  };
}
