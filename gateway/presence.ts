/**
 * Presence: which connections each user has, on which instance. One key per
 * user in the devices bucket (key = user token) holds all of that user's
 * connections; instances change it with compare-and-set, so two instances
 * adding devices of one user at once never lose each other's entry. Entries
 * of dead instances (see beats.ts) are ignored by readers and dropped by the
 * next writer of the key.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { KV, KvEntry } from "@nats-io/kv";
import { PresenceRecordSchema, type PresenceEntry, type PresenceRecord } from "../gen/switchyard/device/v1/relay_pb.js";
import type { Logger } from "../platform/index.js";
import type { GatewayBeats } from "./beats.js";
import { userToken } from "./subjects.js";

/** The outcome of adding a connection. */
export interface AddResult {
  /** Older connections of the same device (to be closed: taken over). */
  readonly replaced: readonly PresenceEntry[];
}

/** Presence writes (by the instance holding a connection) and fresh reads. */
export interface PresenceStore {
  /**
   * Adds a connection. Throws RESOURCE_EXHAUSTED when the user would hold more
   * than `cap` connections (a newer connection of the same device replaces
   * the older instead of counting twice), UNAVAILABLE when NATS is unreachable.
   */
  add(userId: string, entry: PresenceEntry, cap: number): Promise<AddResult>;
  /**
   * Puts back the entry of a connection that is still open here, after other
   * instances may have dropped it while this one looked dead (see
   * GatewayBeats.onResumed). "taken-over" when a live connection of the same
   * device is listed instead (close this one); UNAVAILABLE when NATS is
   * unreachable.
   */
  restore(userId: string, entry: PresenceEntry): Promise<"kept" | "taken-over">;
  /** Removes a connection; resolves after the first attempt (a failed one is retried in the background until it succeeds). */
  remove(userId: string, sessionId: string): Promise<void>;
  /** The user's live connections, read now from the bucket. */
  read(userId: string): Promise<PresenceEntry[]>;
  /** Decodes a stored value and keeps the live entries. */
  live(record: PresenceRecord): PresenceEntry[];
  /** Stops background retries. */
  stop(): void;
}

const maxAttempts = 20;

/**
 * Creates the presence store over the devices bucket. `changed` hears of
 * every stored change of a user's record; the write waits for it, so what it
 * announces goes out before the device is welcomed.
 */
export function createPresenceStore(kv: KV, beats: GatewayBeats, log: Logger, changed: (userId: string) => Promise<void> = async () => {}): PresenceStore {
  const retries = new Map<string, NodeJS.Timeout>();
  let stopped = false;

  const decode = (e: KvEntry | null): PresenceRecord =>
    e === null || e.operation !== "PUT" || e.length === 0 ? create(PresenceRecordSchema) : fromBinary(PresenceRecordSchema, e.value);
  const live = (r: PresenceRecord) => r.entries.filter((x) => beats.isAlive(x.device?.gatewayInstance ?? ""));

  /** Read-modify-write with compare-and-set; `change` returns the new entries or undefined for no change. */
  async function modify(userId: string, change: (entries: PresenceEntry[]) => PresenceEntry[] | undefined): Promise<void> {
    const key = userToken(userId);
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const e = await kv.get(key);
      const next = change(decode(e).entries);
      if (next === undefined) return;
      try {
        if (next.length === 0) {
          if (e !== null && e.operation === "PUT") await kv.delete(key, { previousSeq: e.revision });
        } else {
          const bytes = toBinary(PresenceRecordSchema, create(PresenceRecordSchema, { entries: next }));
          if (e === null) await kv.create(key, bytes);
          else await kv.update(key, bytes, e.revision);
        }
        await changed(userId);
        return;
      } catch (err) {
        if (!/wrong last sequence|key exists/i.test((err as Error).message)) throw err;
        // another instance changed the key meanwhile: read again
      }
    }
    throw new ConnectError("presence is too contended; retry", Code.Unavailable);
  }

  const remove = (userId: string, sessionId: string, delay = 0): Promise<void> => {
    if (stopped) return Promise.resolve();
    const run = () => {
      retries.delete(sessionId);
      return modify(userId, (entries) => {
        const kept = entries.filter((x) => x.sessionId !== sessionId && beats.isAlive(x.device?.gatewayInstance ?? ""));
        return kept.length === entries.length ? undefined : kept;
      }).catch((err: unknown) => {
        log.warn({ err: String(err) }, "presence removal failed; retrying");
        void remove(userId, sessionId, Math.min(5000, Math.max(250, delay * 2)));
      });
    };
    if (delay === 0) return run();
    const t = setTimeout(run, delay);
    t.unref();
    retries.set(sessionId, t);
    return Promise.resolve();
  };

  return {
    async add(userId, entry, cap) {
      let replaced: PresenceEntry[] = [];
      try {
        await modify(userId, (entries) => {
          const deviceId = entry.device!.deviceId;
          const alive = entries.filter((x) => beats.isAlive(x.device?.gatewayInstance ?? ""));
          replaced = alive.filter((x) => x.device?.deviceId === deviceId);
          const others = alive.filter((x) => x.device?.deviceId !== deviceId);
          if (others.length >= cap) {
            throw new ConnectError(`user already has ${others.length} device connections (the cap is ${cap})`, Code.ResourceExhausted);
          }
          return [...others, entry];
        });
      } catch (err) {
        if (err instanceof ConnectError) throw err;
        throw new ConnectError("presence store unreachable", Code.Unavailable);
      }
      return { replaced };
    },
    async restore(userId, entry) {
      let takenOver = false;
      try {
        await modify(userId, (entries) => {
          if (entries.some((x) => x.sessionId === entry.sessionId)) return undefined;
          const alive = entries.filter((x) => beats.isAlive(x.device?.gatewayInstance ?? ""));
          takenOver = alive.some((x) => x.device?.deviceId === entry.device?.deviceId);
          return takenOver ? undefined : [...alive, entry];
        });
      } catch (err) {
        if (err instanceof ConnectError) throw err;
        throw new ConnectError("presence store unreachable", Code.Unavailable);
      }
      return takenOver ? "taken-over" : "kept";
    },
    remove: (userId, sessionId) => remove(userId, sessionId),
    async read(userId) {
      try {
        return live(decode(await kv.get(userToken(userId))));
      } catch {
        throw new ConnectError("presence store unreachable", Code.Unavailable);
      }
    },
    live,
    stop() {
      stopped = true;
      for (const t of retries.values()) clearTimeout(t);
      retries.clear();
    },
  };
}
