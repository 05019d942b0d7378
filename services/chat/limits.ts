/**
 * Per-tier limits of the assistant, as documented in the chat and agent
 * contracts (proto/switchyard/chat/v1): one table, read by the handlers.
 */
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";

/** What one tier may do. */
export interface TierLimits {
  /** Turns (chat turns and agent runs) of one user running at once. */
  readonly concurrentTurns: number;
  /** Tool calls one turn may make. */
  readonly toolCallsPerTurn: number;
  /** Model tokens (input + output) one turn may use. */
  readonly tokensPerTurn: number;
  /** Agents a user may set up; 0 means no limit. */
  readonly agents: number;
}

const limits: ReadonlyMap<Tier, TierLimits> = new Map([
  [Tier.FREE, { concurrentTurns: 1, toolCallsPerTurn: 8, tokensPerTurn: 20_000, agents: 2 }],
  [Tier.PRO, { concurrentTurns: 3, toolCallsPerTurn: 16, tokensPerTurn: 100_000, agents: 5 }],
  [Tier.POWER, { concurrentTurns: 8, toolCallsPerTurn: 32, tokensPerTurn: 200_000, agents: 20 }],
  [Tier.TEAM, { concurrentTurns: 16, toolCallsPerTurn: 64, tokensPerTurn: 400_000, agents: 0 }],
]);

/** The limits of `tier`; an unknown tier gets the free tier's. */
export function limitsOf(tier: Tier): TierLimits {
  return limits.get(tier) ?? limits.get(Tier.FREE)!;
}

/** The tier's name for metrics labels and messages. */
export function tierName(tier: Tier): string {
  return (Tier[tier] ?? "UNSPECIFIED").toLowerCase();
}
