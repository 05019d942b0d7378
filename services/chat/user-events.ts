/**
 * Chat's reaction to events that change what a user's tool listing holds
 * (PluginInstalled, PluginUninstalled, DevicesChanged): the user's cached
 * listing is dropped, so their next turn lists the change.
 *
 * Every chat instance keeps its own caches, so every instance must hear every
 * change: this is a plain NATS subscription per instance on the events'
 * subjects (JetStream publishes reach core subscribers too), not a durable
 * consumer, which would hand each event to one instance only. Missing an
 * event (NATS briefly away) costs at most the cache's TTL.
 */
import { fromBinary, type DescMessage } from "@bufbuild/protobuf";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { DevicesChangedSchema, PluginInstalledSchema, PluginUninstalledSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { eventSubject, type Logger } from "../../platform/index.js";

/** Events after which a user's plugin tools may differ. */
export const pluginChangeEvents: readonly DescMessage[] = [PluginInstalledSchema, PluginUninstalledSchema];
/** Events after which a user's device tools may differ. */
export const deviceChangeEvents: readonly DescMessage[] = [DevicesChangedSchema];

/** The user an event of one of `schemas` names (its `user_id`), or undefined when it is none of them or malformed. */
export function userOfEvent(schemas: readonly DescMessage[], subject: string, payload: Uint8Array): string | undefined {
  const schema = schemas.find((s) => eventSubject(s) === subject);
  if (schema === undefined) return undefined;
  try {
    const userId = (fromBinary(schema, payload) as { userId?: unknown }).userId;
    return typeof userId === "string" && userId !== "" ? userId : undefined;
  } catch {
    return undefined; // A malformed payload names nobody; the TTL still bounds staleness.
  }
}

/**
 * Calls `invalidate(userId)` for every event of `schemas` (each must have a
 * `user_id` field), on this instance; returns the function that stops listening.
 */
export function watchUserEvents(nats: NatsConnection, schemas: readonly DescMessage[], invalidate: (userId: string) => void, log: Logger): () => Promise<void> {
  const subs: Subscription[] = schemas.map((schema) =>
    nats.subscribe(eventSubject(schema), {
      callback: (err, msg) => {
        if (err !== null) {
          log.warn({ err: String(err), subject: eventSubject(schema) }, "event subscription failed; cached tool listings expire by TTL");
          return;
        }
        const userId = userOfEvent(schemas, msg.subject, msg.data);
        if (userId !== undefined) invalidate(userId);
      },
    }),
  );
  return async () => {
    for (const s of subs) s.unsubscribe();
  };
}
