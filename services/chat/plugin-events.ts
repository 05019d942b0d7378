/**
 * Chat's reaction to PluginInstalled and PluginUninstalled: the user's cached
 * plugin tool listing is dropped, so their next turn lists the change.
 *
 * Every chat instance keeps its own cache, so every instance must hear every
 * change: this is a plain NATS subscription per instance on the events'
 * subjects (the outbox relay's JetStream publish reaches core subscribers
 * too), not a durable consumer, which would hand each event to one instance
 * only. Missing an event (NATS briefly away) costs at most the cache's TTL.
 */
import { fromBinary } from "@bufbuild/protobuf";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { PluginInstalledSchema, PluginUninstalledSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { eventSubject, type Logger } from "../../platform/index.js";

/** The user a PluginInstalled/PluginUninstalled payload names, or undefined when it is not one. */
export function userOfPluginEvent(subject: string, payload: Uint8Array): string | undefined {
  try {
    if (subject === eventSubject(PluginInstalledSchema)) return fromBinary(PluginInstalledSchema, payload).userId || undefined;
    if (subject === eventSubject(PluginUninstalledSchema)) return fromBinary(PluginUninstalledSchema, payload).userId || undefined;
  } catch {
    // A malformed payload names nobody; the TTL still bounds staleness.
  }
  return undefined;
}

/**
 * Calls `invalidate(userId)` for every plugin install or uninstall, on this
 * instance; returns the function that stops listening.
 */
export function watchPluginChanges(nats: NatsConnection, invalidate: (userId: string) => void, log: Logger): () => Promise<void> {
  const subs: Subscription[] = [PluginInstalledSchema, PluginUninstalledSchema].map((schema) =>
    nats.subscribe(eventSubject(schema), {
      callback: (err, msg) => {
        if (err !== null) {
          log.warn({ err: String(err) }, "plugin change subscription failed; cached plugin tools expire by TTL");
          return;
        }
        const userId = userOfPluginEvent(msg.subject, msg.data);
        if (userId !== undefined) invalidate(userId);
      },
    }),
  );
  return async () => {
    for (const s of subs) s.unsubscribe();
  };
}
