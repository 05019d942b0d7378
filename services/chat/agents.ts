/**
 * The agent catalogue as the turn engine needs it: an agent's system prompt
 * and tool allow-list. Agents are rows of chat.agents (seeded by migration);
 * an empty agent id is the default assistant, which may use every tool.
 */
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import type { Sql, TransactionSql } from "../../platform/index.js";

/** An agent as stored. */
export interface AgentRow {
  readonly id: string;
  readonly display_name: string;
  readonly description: string;
  readonly min_tier: Tier;
  readonly system_prompt: string;
  /** Tool names the agent may use; undefined means all (the default assistant). */
  readonly tools: readonly string[] | undefined;
  readonly input_schema: Record<string, unknown>;
}

/** The default assistant: answers Chat turns with no agent id. */
export const defaultAssistant: AgentRow = {
  id: "",
  display_name: "Assistant",
  description: "The general assistant, using every tool of the user's devices.",
  min_tier: Tier.FREE,
  system_prompt:
    "You are Switchyard's assistant. You act on the user's own devices through the tools offered. " +
    "Use a tool when it helps; say plainly when a tool failed or is unavailable. Be brief.",
  tools: undefined,
  input_schema: {},
};

/** The agent `agentId` ("" = the default assistant), or undefined when it is not in the catalogue. */
export async function loadAgent(sql: Sql | TransactionSql, agentId: string): Promise<AgentRow | undefined> {
  if (agentId === "") return defaultAssistant;
  const [row] = await sql<AgentRow[]>`
    select id, display_name, description, min_tier, system_prompt, tools, input_schema from chat.agents where id = ${agentId}`;
  return row;
}

/** The catalogue, ordered by id, after `afterId`, at most `limit`. */
export async function listAgents(sql: Sql, afterId: string, limit: number): Promise<AgentRow[]> {
  return sql<AgentRow[]>`
    select id, display_name, description, min_tier, system_prompt, tools, input_schema from chat.agents
    where id > ${afterId} order by id limit ${limit}`;
}
