/**
 * Chat's SQL: conversations, turns and their leases, recorded steps and
 * events, the history the model sees. Every statement is schema-qualified
 * (chat.*) and parameterised.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ChatResponseSchema, type ChatResponse } from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import type { Sql, TransactionSql } from "../../platform/index.js";
import type { ModelMessage } from "./model/index.js";
import type { TurnStep } from "./steps.js";

/** A turn as stored. */
export interface TurnRow {
  readonly id: string;
  readonly conversation_id: string;
  readonly user_id: string;
  readonly tier: Tier;
  readonly agent_id: string;
  readonly message: string;
  readonly state: "running" | "done" | "failed" | "cancelled";
  readonly deadline: Date;
  readonly error_code: number;
  readonly error_message: string;
  readonly lease_owner: string | null;
}

/** How a turn ended. */
export type TurnEnd =
  | { readonly state: "done"; readonly finishReason: number; readonly inputTokens: number; readonly outputTokens: number; readonly toolCalls: number; readonly history: readonly ModelMessage[] }
  | { readonly state: "failed"; readonly code: number; readonly message: string; readonly inputTokens: number; readonly outputTokens: number; readonly toolCalls: number }
  | { readonly state: "cancelled"; readonly inputTokens: number; readonly outputTokens: number; readonly toolCalls: number };

/** A turn to start (and its conversation, when `newConversation`). */
export interface NewTurn {
  readonly id: string;
  readonly conversationId: string;
  readonly newConversation: boolean;
  readonly userId: string;
  readonly tier: Tier;
  readonly agentId: string;
  readonly message: string;
  readonly deadline: Date;
}

/** Whether a turn started, or why not (see chat.start_turn in migrations/002_start_turn.sql). */
export type StartOutcome = "ok" | "not_found" | "busy" | "limit";

/** The first event of every turn (sequence 1), recorded with the turn itself. */
export function startedEvent(t: Pick<NewTurn, "id" | "conversationId">): ChatResponse {
  return create(ChatResponseSchema, { sequence: 1n, event: { case: "started", value: { conversationId: t.conversationId, turnId: t.id } } });
}

/**
 * Starts a running turn held by `owner` for `leaseMs`, with its `started`
 * event, if the conversation is the user's and idle and the user has fewer
 * than `limit` turns running: one statement (one round trip when alone, its
 * own commit), or part of `tx`.
 */
export async function startTurnRow(sql: Sql | TransactionSql, t: NewTurn, owner: string, leaseMs: number, limit: number): Promise<StartOutcome> {
  const started = Buffer.from(toBinary(ChatResponseSchema, startedEvent(t)));
  const [row] = await sql<{ outcome: StartOutcome }[]>`
    select chat.start_turn(${t.id}, ${t.conversationId}, ${t.newConversation}, ${t.userId}, ${t.tier}, ${t.agentId}, ${t.message},
                           ${owner}, ${leaseMs}, ${t.deadline}, ${limit}, ${started}) as outcome`;
  return row!.outcome;
}

/** What a start would find, read without taking its lock: whether `start_turn` would start the turn now, and the history it would run on. */
export interface StartPreview {
  readonly wouldStart: boolean;
  readonly history: ModelMessage[];
}

/**
 * Reads what `start_turn` is about to check for a turn of an existing
 * conversation (the conversation is the user's and idle, the user is under
 * `limit` running turns, `t.id` itself left out), with the conversation's
 * history: one read, no commit. Only the user's own conversation's history is
 * returned. A preview, not a decision: `start_turn` decides under its lock.
 */
export async function previewStart(sql: Sql, t: Pick<NewTurn, "id" | "conversationId" | "userId">, limit: number): Promise<StartPreview> {
  const [row] = await sql<{ running: number; owned: boolean; busy: boolean; history: ModelMessage[] }[]>`
    select (select count(*)::int from chat.turns where user_id = ${t.userId} and state = 'running' and id <> ${t.id}) as running,
           c.id is not null as owned,
           exists (select 1 from chat.turns where conversation_id = c.id and state = 'running' and id <> ${t.id}) as busy,
           coalesce((select json_agg(m.message order by m.position) from chat.messages m where m.conversation_id = c.id), '[]') as history
    from (select 1) as one left join chat.conversations c on c.id = ${t.conversationId} and c.user_id = ${t.userId}`;
  return { wouldStart: row!.running < limit && row!.owned && !row!.busy, history: row!.history };
}

/** One turn. */
export async function loadTurn(sql: Sql | TransactionSql, turnId: string): Promise<TurnRow | undefined> {
  const [row] = await sql<TurnRow[]>`
    select id, conversation_id, user_id, tier, agent_id, message, state, deadline, error_code, error_message, lease_owner
    from chat.turns where id = ${turnId}`;
  return row;
}

/** The history of a conversation (finished turns' messages), in order. */
export async function loadHistory(sql: Sql, conversationId: string): Promise<ModelMessage[]> {
  const rows = await sql<{ message: ModelMessage }[]>`
    select message from chat.messages where conversation_id = ${conversationId} order by position`;
  return rows.map((r) => r.message);
}

/** The recorded steps of a turn, in order. */
export async function loadSteps(sql: Sql, turnId: string): Promise<TurnStep[]> {
  const rows = await sql<{ data: TurnStep }[]>`select data from chat.turn_steps where turn_id = ${turnId} order by step`;
  return rows.map((r) => r.data);
}

/** Events of a turn above `after`, in order, at most `limit`. */
export async function loadEvents(sql: Sql, turnId: string, after: number, limit = 500): Promise<ChatResponse[]> {
  const rows = await sql<{ event: Buffer }[]>`
    select event from chat.turn_events where turn_id = ${turnId} and seq > ${after} order by seq limit ${limit}`;
  return rows.map((r) => fromBinary(ChatResponseSchema, r.event));
}

/** Records how a turn ended (inside the transaction that writes its last events); appends the history when done. */
export async function endTurn(tx: TransactionSql, turn: { id: string; conversationId: string }, end: TurnEnd): Promise<void> {
  const code = end.state === "failed" ? end.code : 0;
  const message = end.state === "failed" ? end.message : "";
  const finish = end.state === "done" ? end.finishReason : 0;
  await tx`
    update chat.turns set state = ${end.state}, finish_reason = ${finish}, error_code = ${code}, error_message = ${message},
      input_tokens = ${end.inputTokens}, output_tokens = ${end.outputTokens}, tool_calls = ${end.toolCalls},
      lease_owner = null, lease_until = null, finished_at = now()
    where id = ${turn.id}`;
  if (end.state !== "done" || end.history.length === 0) return;
  const [row] = await tx<{ n: number }[]>`select coalesce(max(position), -1)::int as n from chat.messages where conversation_id = ${turn.conversationId}`;
  const rows = end.history.map((m, i) => ({ conversation_id: turn.conversationId, position: row!.n + 1 + i, turn_id: turn.id, message: tx.json(m as never) }));
  await tx`insert into chat.messages ${tx(rows, "conversation_id", "position", "turn_id", "message")}`;
}

/** Renews the leases this instance holds; returns the ids it still holds. */
export async function renewLeases(sql: Sql, owner: string, turnIds: readonly string[], leaseMs: number): Promise<Set<string>> {
  if (turnIds.length === 0) return new Set();
  const rows = await sql<{ id: string }[]>`
    update chat.turns set lease_until = now() + ${leaseMs} * interval '1 millisecond'
    where id = any(${turnIds as string[]}) and lease_owner = ${owner} and state = 'running' returning id`;
  return new Set(rows.map((r) => r.id));
}

/** Lets go of turns (at shutdown) so another instance takes them over at once. */
export async function releaseLeases(sql: Sql, owner: string, turnIds: readonly string[]): Promise<void> {
  if (turnIds.length === 0) return;
  await sql`update chat.turns set lease_until = now() - interval '1 second' where id = any(${turnIds as string[]}) and lease_owner = ${owner} and state = 'running'`;
}

/** Claims up to `limit` running turns whose lease ran out (SKIP LOCKED: each goes to one instance). */
export async function claimExpiredTurns(sql: Sql, owner: string, leaseMs: number, limit: number): Promise<TurnRow[]> {
  return sql<TurnRow[]>`
    with expired as (
      select id from chat.turns where state = 'running' and lease_until < now()
      order by lease_until limit ${limit} for update skip locked)
    update chat.turns t set lease_owner = ${owner}, lease_until = now() + ${leaseMs} * interval '1 millisecond'
    from expired where t.id = expired.id
    returning t.id, t.conversation_id, t.user_id, t.tier, t.agent_id, t.message, t.state, t.deadline, t.error_code, t.error_message, t.lease_owner`;
}
