/**
 * Declaring durable consumers idempotently at start: created when missing,
 * updated when their settings drifted, left alone otherwise. Streams and KV
 * buckets are declared through declare.ts.
 */
import type { ConsumerConfig, JetStreamManager } from "@nats-io/jetstream";
import { isNotFound } from "./declare.js";

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
