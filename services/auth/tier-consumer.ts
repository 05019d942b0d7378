/**
 * Auth's consumer of billing's TierChanged events (durable
 * "auth-tier-changed"): the user's tier changes, and every access token
 * minted from then on (the next Refresh or Login) carries it. Tokens already
 * issued keep the old tier until they expire (15 minutes at most).
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TierChangedSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import type { Events, Logger } from "../../platform/index.js";
import { applyTierChange, isUserId } from "./users.js";

/** The durable consumer's name. */
export const TIER_CHANGED_DURABLE = "auth-tier-changed";

/** Starts consuming TierChanged; resolves with the function that stops it. */
export function consumeTierChanges(events: Events, log: Logger): Promise<() => Promise<void>> {
  return events.consume({
    schema: TierChangedSchema,
    durable: TIER_CHANGED_DURABLE,
    async handle(event, meta, tx) {
      // Events that can never apply are skipped (logged), not retried into the dead-letter stream.
      if (!isUserId(event.userId) || event.newTier === Tier.UNSPECIFIED || !(event.newTier in Tier)) {
        log.warn({ eventId: meta.eventId, tier: event.newTier }, "TierChanged ignored: bad user id or tier");
        return;
      }
      const occurredAt = event.occurTime ? timestampDate(event.occurTime) : meta.occurredAt;
      const applied = await applyTierChange(tx, event.userId, event.newTier, occurredAt);
      log.info({ eventId: meta.eventId, userId: event.userId, tier: Tier[event.newTier], applied }, "tier change");
    },
  });
}
