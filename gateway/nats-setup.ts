/**
 * The gateway's JetStream streams and KV buckets, declared idempotently at
 * start and again after every reconnect (a nats-server that lost its store
 * gets them back). File storage throughout: a nats-server restart keeps
 * calls, outcomes, dedupe state, presence and notifications.
 */
import { jetstreamManager, type JetStreamManager, type StreamConfig } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import type { GatewayNames } from "./subjects.js";

/** How long a call's id stays deduplicated and its outcome kept: the idempotency window. */
export const CALL_RETENTION_MS = 10 * 60_000;
/** How long notifications are kept. */
export const NOTIFY_RETENTION_MS = 30 * 24 * 3600_000;
/** How long a notification idempotency key is remembered. */
export const NOTIFY_DEDUPE_MS = 24 * 3600_000;

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

/** Creates (or updates to the wanted configuration) every stream and bucket. */
export async function ensureGatewayStore(nc: NatsConnection, n: GatewayNames, opts: StoreOptions): Promise<GatewayStore> {
  const jsm = await jetstreamManager(nc);
  const p = n.prefix;
  await ensureStream(jsm, {
    name: n.callStream,
    subjects: [`${p}.tools.*.*`],
    storage: "file" as never,
    max_age: CALL_RETENTION_MS * 1e6,
    duplicate_window: CALL_RETENTION_MS * 1e6,
    max_bytes: 1024 ** 3,
    discard: "old" as never,
    allow_direct: true,
    republish: { src: `${p}.tools.>`, dest: `${p}.deliver.>` },
  });
  await ensureStream(jsm, {
    name: n.resultStream,
    subjects: [`${p}.toolres.*.*`],
    storage: "file" as never,
    max_age: CALL_RETENTION_MS * 1e6,
    max_bytes: 1024 ** 3,
    discard: "old" as never,
    allow_direct: true, // retries read a call's outcome with a direct get
  });
  await ensureStream(jsm, {
    name: n.notifyStream,
    subjects: [`${p}.notify.*`],
    storage: "file" as never,
    max_age: NOTIFY_RETENTION_MS * 1e6,
    max_msgs_per_subject: opts.notifyKeepPerUser,
    discard: "old" as never, // drop a user's oldest, never refuse a new one
    duplicate_window: NOTIFY_DEDUPE_MS * 1e6,
    allow_direct: true,
    republish: { src: `${p}.notify.>`, dest: `${p}.notified.>` },
  });
  const kvm = new Kvm(nc);
  const devices = await kvm.create(n.devicesBucket, {
    history: 1,
    storage: "file" as never,
    republish: { src: `$KV.${n.devicesBucket}.>`, dest: `${p}.presence.>` },
  });
  const gateways = await kvm.create(n.gatewaysBucket, {
    history: 1,
    storage: "file" as never,
    ttl: 3600_000, // dead instances' keys go away eventually; liveness is judged by the beat's time
    republish: { src: `$KV.${n.gatewaysBucket}.>`, dest: `${p}.beat.>` },
  });
  const tickets = await kvm.create(n.ticketsBucket, { history: 1, storage: "file" as never, ttl: 30_000 });
  return { jsm, devices, gateways, tickets };
}

async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.add(config);
  } catch (err) {
    if (!/already in use/i.test((err as Error).message)) throw err;
    await jsm.streams.update(config.name, config);
  }
}
