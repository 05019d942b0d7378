/**
 * Plugins' consumer of billing's TierChanged (durable "plugins-tier-changed"):
 * installations whose plugin needs more than the user's new tier are
 * suspended (their tools are no longer offered or callable), and suspended
 * ones the new tier allows resume. Nothing is uninstalled, so upgrading again
 * restores what the user had. A late, older event never overrides a newer one.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TierChangedSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import type { Events, Logger } from "../../platform/index.js";
import { lockUser } from "./catalog.js";

/** The durable consumer's name. */
export const PLUGINS_TIER_CHANGED_DURABLE = "plugins-tier-changed";

/** Starts consuming TierChanged; resolves with the function that stops it. */
export function consumeTierChanges(events: Events, log: Logger): Promise<() => Promise<void>> {
  return events.consume({
    schema: TierChangedSchema,
    durable: PLUGINS_TIER_CHANGED_DURABLE,
    // One user's lock per transaction: batches locking several users could deadlock each other.
    batchSize: 1,
    async handle(event, meta, tx) {
      if (event.newTier === Tier.UNSPECIFIED || !(event.newTier in Tier) || event.userId === "") {
        log.warn({ eventId: meta.eventId }, "TierChanged ignored: no user or tier");
        return;
      }
      await lockUser(tx, event.userId);
      const at = event.occurTime ? timestampDate(event.occurTime) : meta.occurredAt;
      const [applied] = await tx`
        insert into plugins.user_tiers (user_id, tier, changed_at) values (${event.userId}, ${event.newTier}, ${at})
        on conflict (user_id) do update set tier = excluded.tier, changed_at = excluded.changed_at
        where plugins.user_tiers.changed_at < excluded.changed_at
        returning tier`;
      if (applied === undefined) return;
      const changed = await tx`
        update plugins.installations i set suspended = (p.min_tier > ${event.newTier})
        from plugins.plugins p where p.id = i.plugin_id and i.user_id = ${event.userId} and i.suspended <> (p.min_tier > ${event.newTier})
        returning i.plugin_id, i.suspended`;
      if (changed.length > 0) log.info({ userId: event.userId, tier: Tier[event.newTier], changed: changed.length }, "installations suspended or resumed");
    },
  });
}
