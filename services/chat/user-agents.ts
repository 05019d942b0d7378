/**
 * Agents a user has set up: one row per (user, agent), created by the first
 * Chat turn with the agent's id, within the tier's quota (limits.ts).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { CanCreateDenial } from "../../gen/switchyard/chat/v1/agent_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import type { Sql, TransactionSql } from "../../platform/index.js";
import type { AgentRow } from "./agents.js";
import { limitsOf } from "./limits.js";

/** Whether a user may set up one more agent, and why not. */
export interface SetUpCheck {
  readonly allowed: boolean;
  readonly denial: CanCreateDenial;
  readonly reason: string;
  readonly used: number;
  readonly limit: number;
}

/** Checks whether `userId` (of `tier`) may set `agent` up now. */
export async function checkSetUp(sql: Sql | TransactionSql, userId: string, tier: Tier, agent: AgentRow): Promise<SetUpCheck> {
  const rows = await sql<{ agent_id: string }[]>`select agent_id from chat.user_agents where user_id = ${userId}`;
  const used = rows.length;
  const limit = limitsOf(tier).agents;
  const base = { used, limit };
  if (tier < agent.min_tier) {
    return { ...base, allowed: false, denial: CanCreateDenial.TIER_TOO_LOW, reason: `${agent.display_name} needs the ${Tier[agent.min_tier]!.toLowerCase()} tier or higher; upgrade to use it` };
  }
  if (rows.some((r) => r.agent_id === agent.id)) {
    return { ...base, allowed: false, denial: CanCreateDenial.ALREADY_CREATED, reason: `you have already set ${agent.display_name} up` };
  }
  if (limit !== 0 && used >= limit) {
    return { ...base, allowed: false, denial: CanCreateDenial.QUOTA_REACHED, reason: `your tier allows ${limit} agents and you have set up ${used}; upgrade for more` };
  }
  return { ...base, allowed: true, denial: CanCreateDenial.UNSPECIFIED, reason: "" };
}

/** Whether `userId` has set `agentId` up. */
export async function hasSetUp(sql: Sql | TransactionSql, userId: string, agentId: string): Promise<boolean> {
  return (await sql`select 1 from chat.user_agents where user_id = ${userId} and agent_id = ${agentId}`).length > 0;
}

/** Sets `agent` up for the user if it is not yet (inside the turn's transaction); RESOURCE_EXHAUSTED past the quota. */
export async function setUpAgent(tx: TransactionSql, userId: string, tier: Tier, agent: AgentRow): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtext('chat.user_agents'), hashtext(${userId}))`;
  const check = await checkSetUp(tx, userId, tier, agent);
  if (check.denial === CanCreateDenial.ALREADY_CREATED) return;
  if (!check.allowed) throw new ConnectError(check.reason, check.denial === CanCreateDenial.TIER_TOO_LOW ? Code.PermissionDenied : Code.ResourceExhausted);
  await tx`insert into chat.user_agents (user_id, agent_id) values (${userId}, ${agent.id}) on conflict do nothing`;
}
