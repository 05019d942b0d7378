/**
 * Per-user usage and tier quotas. Every write changes the user's counters in
 * storage.owners inside its own transaction; the row lock this takes orders
 * one user's concurrent writes, so a quota cannot be passed by racing.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { TransactionSql } from "../../platform/index.js";
import type { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";

/** Per tier (index tier - 1: free, pro, power, team). */
export type PerTier = readonly [number, number, number, number];

/** The quotas of every tier. */
export interface Quotas {
  readonly records: PerTier;
  readonly bytes: PerTier;
  readonly vectors: PerTier;
  readonly backups: PerTier;
}

/** A change of a user's counters. */
export interface UsageDelta {
  readonly records?: number;
  readonly bytes?: number;
  readonly vectors?: number;
}

/** The counters after a change, and the tier they are held to. */
export interface Usage {
  readonly tier: number;
  readonly record_count: string;
  readonly record_bytes: string;
  readonly vector_count: string;
}

const tierNames = ["free", "pro", "power", "team"];

/** The index of `tier` in a PerTier (unknown tiers count as free). */
export function tierIndex(tier: number): number {
  return tier >= 1 && tier <= 4 ? tier - 1 : 0;
}

/**
 * Applies `delta` to the user's counters (creating the row; recording `tier`
 * when the caller's token carried one) and throws RESOURCE_EXHAUSTED,
 * rolling the transaction back, when a counter that grew passes its quota.
 */
export async function charge(tx: TransactionSql, userId: string, tier: Tier | undefined, delta: UsageDelta, quotas: Quotas): Promise<Usage> {
  const r = delta.records ?? 0;
  const b = delta.bytes ?? 0;
  const v = delta.vectors ?? 0;
  const [u] = await tx<Usage[]>`
    insert into storage.owners (user_id, tier, record_count, record_bytes, vector_count)
    values (${userId}, ${tier ?? 1}, ${r}, ${b}, ${v})
    on conflict (user_id) do update set
      tier = coalesce(${tier ?? null}::smallint, storage.owners.tier),
      record_count = storage.owners.record_count + ${r},
      record_bytes = storage.owners.record_bytes + ${b},
      vector_count = storage.owners.vector_count + ${v}
    returning tier, record_count, record_bytes, vector_count`;
  const i = tierIndex(u!.tier);
  const over = (what: string, used: string, limit: number) =>
    new ConnectError(`${what}: this would make ${used}, past the ${tierNames[i]} tier's quota of ${limit}; delete some or upgrade`, Code.ResourceExhausted);
  if (r > 0 && Number(u!.record_count) > quotas.records[i]) throw over("records", u!.record_count, quotas.records[i]);
  if (b > 0 && Number(u!.record_bytes) > quotas.bytes[i]) throw over("stored bytes", u!.record_bytes, quotas.bytes[i]);
  if (v > 0 && Number(u!.vector_count) > quotas.vectors[i]) throw over("vectors", u!.vector_count, quotas.vectors[i]);
  return u!;
}

/** The tier to hold a user to now: the caller's own, else the one last seen on the user's token. */
export async function tierOf(tx: TransactionSql, userId: string, tier: Tier | undefined): Promise<number> {
  if (tier !== undefined) return tier;
  const [row] = await tx<{ tier: number }[]>`select tier from storage.owners where user_id = ${userId}`;
  return row?.tier ?? 1;
}
