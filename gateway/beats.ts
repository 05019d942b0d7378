/**
 * Instance heartbeats: each gateway instance writes its beat to the gateways
 * bucket every half interval, and every instance follows all beats through the
 * bucket's RePublish subject. An instance whose last beat is older than its
 * interval is dead: its presence entries are ignored and the calls handed to
 * it fail. nats-server 2.9 sends no delete when a KV entry expires, so
 * liveness is judged by the beat's time, never by the key's existence.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { KV } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { GatewayBeatSchema } from "../gen/switchyard/device/v1/relay_pb.js";
import type { Logger } from "../platform/index.js";
import type { GatewayNames } from "./subjects.js";

/** What the gateway knows about instance liveness. */
export interface GatewayBeats {
  /** Writes the first beat and starts following everyone's. */
  start(): Promise<void>;
  /** Whether `instance` beat within its interval. Unknown instances are dead. */
  isAlive(instance: string): boolean;
  /** When `instance` last beat (epoch ms), if known. */
  lastBeat(instance: string): number | undefined;
  /** Calls `fn` when a live instance goes stale or says goodbye (not while we ourselves are cut off). */
  onDead(fn: (instance: string) => void): void;
  /**
   * Calls `fn` when this instance's beat is stored again after a gap long
   * enough for others to have judged it dead (a stall or a NATS outage):
   * they may have dropped its presence entries meanwhile.
   */
  onResumed(fn: () => void): void;
  /** The NATS connection came back: beats resume, judging waits one interval. */
  reconnected(): void;
  /** The NATS connection dropped: stop judging others until it is back. */
  disconnected(): void;
  /** Stops beating and deletes this instance's beat (others see it dead at once). */
  stop(): Promise<void>;
}

interface Known {
  time: number;
  interval: number;
  alive: boolean;
}

/** Options of the heartbeat. */
export interface BeatOptions {
  readonly nc: NatsConnection;
  readonly kv: KV;
  readonly names: GatewayNames;
  readonly instanceId: string;
  readonly intervalMs: number;
  readonly log: Logger;
}

/** Creates the heartbeat writer and liveness monitor of this instance. */
export function createGatewayBeats(o: BeatOptions): GatewayBeats {
  const known = new Map<string, Known>();
  const deadListeners: ((instance: string) => void)[] = [];
  const resumedListeners: (() => void)[] = [];
  /** Time inside our last stored beat: others judge us by it. */
  let lastStoredBeat = 0;
  let sub: Subscription | undefined;
  let beatTimer: NodeJS.Timeout | undefined;
  let checkTimer: NodeJS.Timeout | undefined;
  // Judging others needs our own view to be current: not while cut off from
  // NATS, and not until a full interval of beats has had a chance to arrive.
  let judgeFrom = Date.now() + o.intervalMs;
  let connected = true;

  const note = (instance: string, time: number, interval: number) => {
    const k = known.get(instance);
    if (k === undefined) known.set(instance, { time, interval, alive: Date.now() - time <= interval });
    else if (time >= k.time) {
      k.time = time;
      k.interval = interval;
      k.alive = Date.now() - time <= interval;
    }
  };
  const gone = (instance: string) => {
    const k = known.get(instance);
    if (k === undefined) return;
    k.time = 0;
    if (k.alive) {
      k.alive = false;
      for (const fn of deadListeners) fn(instance);
    }
  };
  const beat = async () => {
    const time = Date.now();
    const value = create(GatewayBeatSchema, {
      instanceId: o.instanceId,
      time: timestampFromMs(time),
      interval: durationFromMs(o.intervalMs),
    });
    await o.kv.put(o.instanceId, toBinary(GatewayBeatSchema, value));
    const resumed = lastStoredBeat !== 0 && Date.now() - lastStoredBeat > o.intervalMs;
    lastStoredBeat = Math.max(lastStoredBeat, time);
    if (resumed) for (const fn of resumedListeners) fn();
  };
  const readBeats = async () => {
    for await (const key of await o.kv.keys()) {
      const e = await o.kv.get(key);
      if (e === null || e.operation !== "PUT") continue;
      try {
        const b = fromBinary(GatewayBeatSchema, e.value);
        note(key, b.time ? timestampMs(b.time) : 0, b.interval ? durationMs(b.interval) : 0);
      } catch {
        /* ignore a foreign value */
      }
    }
  };
  const check = () => {
    const now = Date.now();
    const judging = connected && now >= judgeFrom;
    for (const [instance, k] of known) {
      const alive = now - k.time <= k.interval;
      if (k.alive && !alive && judging) {
        k.alive = false;
        for (const fn of deadListeners) fn(instance);
      } else if (alive) k.alive = true;
    }
  };

  return {
    async start() {
      // JetStream may not answer yet (a node down, an election; /readyz says so): the next beat retries.
      await beat().catch((err: unknown) => o.log.warn({ err: String(err) }, "first heartbeat write failed; retrying with the next"));
      sub = o.nc.subscribe(o.names.beats, {
        callback: (err, msg) => {
          if (err) return;
          const instance = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
          const op = msg.headers?.get("KV-Operation");
          if (op === "DEL" || op === "PURGE") return gone(instance);
          try {
            const b = fromBinary(GatewayBeatSchema, msg.data);
            note(instance, b.time ? timestampMs(b.time) : 0, b.interval ? durationMs(b.interval) : 0);
          } catch {
            o.log.warn({ subject: msg.subject }, "undecodable gateway beat");
          }
        },
      });
      // Instances that beat before we subscribed: read their last beats once
      // (if the bucket cannot be read now, their next beats arrive within half an interval).
      await readBeats().catch((err: unknown) => o.log.warn({ err: String(err) }, "reading earlier heartbeats failed"));
      beatTimer = setInterval(() => {
        beat().catch((err: unknown) => o.log.warn({ err: String(err) }, "heartbeat write failed"));
      }, Math.max(50, Math.floor(o.intervalMs / 2)));
      beatTimer.unref();
      checkTimer = setInterval(check, Math.max(25, Math.floor(o.intervalMs / 8)));
      checkTimer.unref();
    },
    isAlive(instance) {
      const k = known.get(instance);
      return k !== undefined && Date.now() - k.time <= k.interval;
    },
    lastBeat: (instance) => known.get(instance)?.time || undefined,
    onDead(fn) {
      deadListeners.push(fn);
    },
    onResumed(fn) {
      resumedListeners.push(fn);
    },
    disconnected() {
      connected = false;
    },
    reconnected() {
      connected = true;
      judgeFrom = Date.now() + o.intervalMs;
      beat().catch(() => {});
    },
    async stop() {
      clearInterval(beatTimer);
      clearInterval(checkTimer);
      sub?.unsubscribe();
      await o.kv.delete(o.instanceId).catch(() => {});
    },
  };
}

