/**
 * Brings billing's copy of one subscription up to date with Stripe, and
 * publishes what changed. Stripe delivers events at least once and in any
 * order, so an event is taken as a hint, never as the state: under a lock on
 * the user's customer row, the subscription is re-read from Stripe and that
 * state is applied. Whoever holds the lock last read Stripe last, so a late,
 * older event can never overwrite newer state; a repeated one finds nothing
 * to change. The ledger row of the event, the new state and the outbox rows
 * of TierChanged / SubscriptionChanged commit in one transaction.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type Stripe from "stripe";
import { SubscriptionStatus } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { SubscriptionChangedSchema, TierChangedSchema, type TierChangeSource } from "../../gen/switchyard/events/v1/events_pb.js";
import type { Database, Events, Logger, TransactionSql } from "../../platform/index.js";
import { findSubscription, isEventRecorded, lockCustomer, recordEvent, saveSubscription, type StoredSubscription } from "./store.js";
import { readStripeSubscription, transition } from "./subscription-state.js";

/** What a sync was asked to do: one subscription of one customer, maybe because of a webhook event. */
export interface SyncRequest {
  readonly subscriptionId: string;
  readonly customerId: string;
  /** The webhook event that prompted it; recorded in the ledger with the outcome. */
  readonly event?: { readonly id: string; readonly type: string };
}

/** What a sync did: the outcome word (also kept in the ledger) and the user's subscription after it. */
export interface SyncResult {
  readonly outcome: "applied" | "unchanged" | "duplicate" | "superseded" | "unknown-customer" | "foreign-subscription" | "unknown-price";
  readonly userId?: string;
  readonly subscription?: StoredSubscription;
}

/** Creates the sync over billing's database, its outbox and a Stripe client. */
export function createSubscriptionSync(deps: {
  db: Database;
  events: Events;
  stripe: Stripe;
  tierOfPrice: (priceId: string) => Tier | undefined;
  log: Logger;
}) {
  const { db, events, stripe, tierOfPrice, log } = deps;

  async function publishChange(tx: TransactionSql, userId: string, before: StoredSubscription | undefined, after: StoredSubscription, tierChanged: boolean, source: TierChangeSource, reason: string) {
    const occurTime = timestampFromDate(after.updatedAt);
    if (tierChanged) {
      await events.publish(tx, TierChangedSchema, create(TierChangedSchema, { userId, oldTier: before?.tier ?? Tier.FREE, newTier: after.tier, source, reason, occurTime }));
    }
    await events.publish(
      tx,
      SubscriptionChangedSchema,
      create(SubscriptionChangedSchema, {
        userId,
        tier: after.tier,
        status: after.status,
        oldStatus: before?.status ?? SubscriptionStatus.NONE,
        currentPeriodEnd: after.currentPeriodEnd ? timestampFromDate(after.currentPeriodEnd) : undefined,
        cancelAtPeriodEnd: after.cancelAtPeriodEnd,
        occurTime,
      }),
    );
  }

  /** Syncs one subscription (see the file comment). Stripe errors propagate; nothing is written then. */
  async function sync(req: SyncRequest): Promise<SyncResult> {
    const result = await db.tx(async (tx): Promise<SyncResult> => {
      const userId = await lockCustomer(tx, req.customerId);
      // A customer billing never made: not ours (another integration on the account, or a forged id). Nothing is written.
      if (userId === undefined) return { outcome: "unknown-customer" };
      // Re-checked under the lock: a concurrent delivery of the same event may have committed meanwhile.
      if (req.event && (await isEventRecorded(tx, req.event.id))) return { outcome: "duplicate", userId };
      const finish = async (r: SyncResult) => {
        if (req.event) await recordEvent(tx, req.event.id, req.event.type, r.outcome);
        return r;
      };
      const before = await findSubscription(tx, userId);
      const sub = await stripe.subscriptions.retrieve(req.subscriptionId);
      const read = readStripeSubscription(sub, tierOfPrice);
      if (typeof read === "string") {
        log.error({ userId, subscription: req.subscriptionId }, `subscription not applied: ${read}`);
        return finish({ outcome: "unknown-price", userId, subscription: before });
      }
      if (read.customerId !== req.customerId) return finish({ outcome: "foreign-subscription", userId, subscription: before });
      const t = transition(before, read);
      if (t.kind !== "changed") return finish({ outcome: t.kind, userId, subscription: before });
      const after = await saveSubscription(tx, userId, t.next);
      await publishChange(tx, userId, before, after, t.tierChanged, t.source, req.event ? `stripe event ${req.event.id} (${req.event.type})` : "billing request");
      return finish({ outcome: "applied", userId, subscription: after });
    });
    return result;
  }

  return { sync };
}

/** The sync's interface. */
export type SubscriptionSync = ReturnType<typeof createSubscriptionSync>;
