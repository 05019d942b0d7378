/**
 * The gateway's JetStream streams and KV buckets, declared through the
 * platform's StreamDeclarer (NATS_REPLICAS, never lowering replicas,
 * operator settings respected, retries and `/readyz` while JetStream cannot
 * answer; objects a server lost are declared again). File storage
 * throughout: a nats-server restart keeps calls, outcomes, dedupe state,
 * presence and notifications. Subjects come from subjects.ts.
 */
import { DiscardPolicy, jetstream, jetstreamManager, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { nanos, type NatsConnection } from "@nats-io/nats-core";
import { createLogDestination, createLogger } from "../platform/log.js";
import { declareStream, kvBucketStream, type StreamDeclaration } from "../platform/nats/declare.js";
import type { GatewayNames } from "./subjects.js";

/** How long a call's id stays deduplicated and its outcome kept: the idempotency window. */
export const CALL_RETENTION_MS = 10 * 60_000;
/** How long notifications are kept. */
export const NOTIFY_RETENTION_MS = 30 * 24 * 3600_000;
/** How long a notification idempotency key is remembered. */
export const NOTIFY_DEDUPE_MS = 24 * 3600_000;
/** How long an instance's beat key lives: dead instances' keys go away eventually; liveness is judged by the beat's time. */
const BEAT_KEY_TTL_MS = 3600_000;
/** How long a device ticket can be redeemed. */
const TICKET_TTL_MS = 30_000;
const GIB = 1024 ** 3;

/** Handles on the gateway's JetStream objects. */
export interface GatewayStore {
  readonly jsm: JetStreamManager;
  readonly devices: KV;
  readonly gateways: KV;
  readonly tickets: KV;
}

/** Options of the declared objects. */
export interface StoreOptions {
  readonly notifyKeepPerUser: number;
}

/** Every stream and bucket of the gateway, as declarations. */
export function gatewayStreams(n: GatewayNames, opts: StoreOptions): StreamDeclaration[] {
  const s = n.stored;
  return [
    {
      name: n.callStream,
      subjects: [s.calls],
      storage: StorageType.File,
      max_age: nanos(CALL_RETENTION_MS),
      duplicate_window: nanos(CALL_RETENTION_MS),
      max_bytes: GIB,
      discard: DiscardPolicy.Old,
      allow_direct: true,
      republish: s.callsRepublish,
    },
    {
      name: n.resultStream,
      subjects: [s.results],
      storage: StorageType.File,
      max_age: nanos(CALL_RETENTION_MS),
      max_bytes: GIB,
      discard: DiscardPolicy.Old,
      allow_direct: true, // retries read a call's outcome with a direct get
    },
    {
      name: n.notifyStream,
      subjects: [s.notifications],
      storage: StorageType.File,
      max_age: nanos(NOTIFY_RETENTION_MS),
      max_msgs_per_subject: opts.notifyKeepPerUser,
      discard: DiscardPolicy.Old, // drop a user's oldest, never refuse a new one
      duplicate_window: nanos(NOTIFY_DEDUPE_MS),
      allow_direct: true,
      republish: s.notificationsRepublish,
    },
    kvBucketStream(n.devicesBucket, { republish: s.presenceRepublish }),
    kvBucketStream(n.gatewaysBucket, { ttlMs: BEAT_KEY_TTL_MS, republish: s.beatsRepublish }),
    kvBucketStream(n.ticketsBucket, { ttlMs: TICKET_TTL_MS }),
  ];
}

/**
 * Handles on the declared objects. Opening binds without asking the server,
 * so it works while JetStream cannot answer yet; operations then fail
 * UNAVAILABLE until the objects are there.
 */
export async function openGatewayStore(nc: NatsConnection, n: GatewayNames): Promise<GatewayStore> {
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const kvm = new Kvm(jetstream(nc, { checkAPI: false }));
  const open = (bucket: string) => kvm.open(bucket, { allow_direct: true });
  return { jsm, devices: await open(n.devicesBucket), gateways: await open(n.gatewaysBucket), tickets: await open(n.ticketsBucket) };
}

/**
 * Declares every object once (no retries; `replicas` default 1, never
 * lowered) and opens them: for tests and benches that run the gateway's
 * parts without a process. Processes declare through `ctx.streams`.
 */
export async function ensureGatewayStore(nc: NatsConnection, n: GatewayNames, opts: StoreOptions, replicas = 1): Promise<GatewayStore> {
  const jsm = await jetstreamManager(nc);
  const log = createLogger("warn", createLogDestination(2)); // stderr: callers may own stdout
  for (const s of gatewayStreams(n, opts)) await declareStream(jsm, s, replicas, log);
  return openGatewayStore(nc, n);
}
