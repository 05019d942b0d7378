/**
 * Declaring JetStream streams and durable consumers idempotently at start:
 * created when missing, updated when their settings drifted, left alone
 * otherwise. Several instances starting together converge on one definition.
 */
import type { ConsumerConfig, JetStreamManager, StreamConfig } from "@nats-io/jetstream";

type StreamDeclaration = Partial<StreamConfig> & { name: string; subjects: string[] };

/**
 * Creates the stream `config.name`, or updates the fields given in `config`
 * when the existing stream differs. Rejects when the server refuses (e.g. the
 * subjects overlap another stream's, or JetStream is not enabled).
 */
export async function ensureStream(jsm: JetStreamManager, config: StreamDeclaration): Promise<void> {
  let existing: StreamConfig | undefined;
  try {
    existing = (await jsm.streams.info(config.name)).config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (existing === undefined) {
    try {
      await jsm.streams.add(config);
      return;
    } catch (err) {
      // Another instance created it first: fall through to compare.
      if (!/already in use|already exists/i.test((err as Error).message)) throw err;
      existing = (await jsm.streams.info(config.name)).config;
    }
  }
  if (differs(config, existing)) {
    const { name, ...update } = config;
    await jsm.streams.update(name, { ...existing, ...update });
  }
}

type ConsumerDeclaration = Partial<ConsumerConfig> & { durable_name: string };

/**
 * Creates the durable consumer `config.durable_name` on `stream`, or updates
 * it when its settings differ. The filter subject of an existing durable is
 * not changed (nats-server 2.9 refuses); a durable that must consume other
 * subjects needs a new name.
 */
export async function ensureConsumer(jsm: JetStreamManager, stream: string, config: ConsumerDeclaration): Promise<void> {
  let existing: ConsumerConfig | undefined;
  try {
    existing = (await jsm.consumers.info(stream, config.durable_name)).config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (existing === undefined) {
    await jsm.consumers.add(stream, config);
    return;
  }
  if (existing.filter_subject !== undefined && config.filter_subject !== undefined && existing.filter_subject !== config.filter_subject) {
    throw new Error(
      `consumer ${config.durable_name} on ${stream} filters ${existing.filter_subject}, not ${config.filter_subject}: choose a new durable name`,
    );
  }
  const { durable_name, filter_subject: _f, deliver_policy: _d, ack_policy: _a, ...update } = config;
  if (differs(update, existing)) await jsm.consumers.update(stream, durable_name, update);
}

function differs(wanted: object, existing: object): boolean {
  const have = existing as Record<string, unknown>;
  return Object.entries(wanted).some(([k, v]) => JSON.stringify(v) !== JSON.stringify(have[k]));
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; code?: number; message?: string };
  return e.name === "StreamNotFoundError" || e.name === "ConsumerNotFoundError" || e.code === 404 || /not found/i.test(e.message ?? "");
}
