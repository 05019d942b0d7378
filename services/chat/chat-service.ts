/**
 * ChatService: Chat starts a turn and follows it; ResumeTurn follows a turn
 * from a sequence; ApproveToolCall answers an approval request. Input rules
 * (lengths, id formats) are checked by the platform from the contract first.
 */
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { NatsConnection } from "@nats-io/nats-core";
import { randomUUID } from "node:crypto";
import { ChatService } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { type Database, type Principal, principalKey, register, SERVICE_ROLE, type ServiceRegistration, type Sql, type TransactionSql } from "../../platform/index.js";
import { loadAgent, type AgentRow } from "./agents.js";
import { limitsOf } from "./limits.js";
import { modelNotConfigured, type ModelProvider } from "./model/index.js";
import type { ChatSettings } from "./settings.js";
import { loadHistory, loadTurn, previewStart, startTurnRow, type NewTurn, type StartPreview, type TurnRow } from "./store.js";
import { beginFirstCall, type FirstCall } from "./model-call.js";
import { followTurn, type FeedDeps } from "./turn-feed.js";
import { approvalSubject, type TurnRunner } from "./turn-runner.js";
import { setUpAgent } from "./user-agents.js";
import type { AgentTool, ToolSource } from "./tools.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";

/** What the handlers are built from. */
export interface ChatHandlerDeps extends FeedDeps {
  readonly db: Database;
  readonly nats: NatsConnection | undefined;
  readonly runner: TurnRunner;
  readonly tools: ToolSource;
  readonly model: ModelProvider | undefined;
  readonly settings: ChatSettings;
  readonly instanceId: string;
  readonly shutdownSignal: AbortSignal;
}

/** The verified caller, who must be a user (chat turns are a user's own). */
export function userOf(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (p === undefined) throw new ConnectError("an access token is required", Code.Unauthenticated);
  return p;
}

function requireUser(p: Principal): void {
  if (p.roles.includes(SERVICE_ROLE)) throw new ConnectError("chat turns are a user's own: a service starts agent runs with AgentService.Trigger", Code.PermissionDenied);
}

/** The caller's turn in the named conversation, or NOT_FOUND (whether it does not exist or is another user's). */
export async function ownTurn(deps: ChatHandlerDeps, p: Principal, conversationId: string, turnId: string): Promise<TurnRow> {
  const turn = await loadTurn(deps.db.sql, turnId);
  if (turn === undefined || turn.user_id !== p.userId || turn.conversation_id !== conversationId) {
    throw new ConnectError(`turn "${turnId}" of conversation "${conversationId}" not found`, Code.NotFound);
  }
  return turn;
}

/** The agent a turn talks to, if the caller's tier may use it. */
async function agentFor(deps: ChatHandlerDeps, p: Principal, agentId: string): Promise<AgentRow> {
  const agent = await loadAgent(deps.db.sql, agentId);
  if (agent === undefined) throw new ConnectError(`agent "${agentId}" is not in the catalog (AgentService.ListCatalog lists it)`, Code.NotFound);
  if (p.tier < agent.min_tier) throw new ConnectError(`agent "${agentId}" needs the ${Tier[agent.min_tier]?.toLowerCase()} tier or higher`, Code.PermissionDenied);
  return agent;
}

/** A turn to record, with fresh ids (and a fresh conversation id when `conversationId` is empty). */
function newTurn(deps: ChatHandlerDeps, p: Principal, conversationId: string, agentId: string, message: string): NewTurn {
  return {
    id: randomUUID(),
    conversationId: conversationId || randomUUID(),
    newConversation: conversationId === "",
    userId: p.userId,
    tier: p.tier,
    agentId,
    message,
    deadline: new Date(Date.now() + deps.settings.CHAT_TURN_DEADLINE_MS),
  };
}

/**
 * Records `t` (and its conversation, if new) under the caller's limits;
 * returns the stored turn. The default assistant's turn is one statement (one
 * round trip); an agent's turn also sets the agent up, in the same transaction.
 */
async function startTurn(deps: ChatHandlerDeps, p: Principal, t: NewTurn, agent: AgentRow): Promise<TurnRow> {
  const limit = limitsOf(p.tier).concurrentTurns;
  const start = (sql: Sql | TransactionSql) => startTurnRow(sql, t, deps.instanceId, deps.settings.CHAT_TURN_LEASE_MS, limit);
  const outcome =
    agent.id === ""
      ? await start(deps.db.sql)
      : await deps.db.tx(async (tx) => {
          const o = await start(tx);
          // Set up only when the turn starts; a refusal below rolls the turn back.
          if (o === "ok") await setUpAgent(tx, p.userId, p.tier, agent);
          return o;
        });
  if (outcome === "not_found") throw new ConnectError(`conversation "${t.conversationId}" not found`, Code.NotFound);
  if (outcome === "busy") throw new ConnectError("a turn of this conversation is still running: follow it with ResumeTurn, or wait until it ends", Code.FailedPrecondition);
  if (outcome === "limit") throw new ConnectError(`you have ${limit} turn(s) running, as many as your tier allows: wait for one to end`, Code.ResourceExhausted);
  return { id: t.id, conversation_id: t.conversationId, user_id: p.userId, tier: p.tier, agent_id: t.agentId, message: t.message, state: "running", deadline: t.deadline, error_code: 0, error_message: "", lease_owner: deps.instanceId };
}

/**
 * What `start_turn` will decide, as far as can be told without waiting on it.
 * A new conversation's start is refused only at the user's limit, judged from
 * the turns this instance runs (the first call waits for nothing); an
 * existing conversation's is read, with the history the first call needs
 * anyway.
 */
function previewOf(deps: ChatHandlerDeps, t: NewTurn, limit: number): Promise<StartPreview> {
  if (t.newConversation) return Promise.resolve({ wouldStart: deps.runner.runningFor(t.userId) < limit, history: [] });
  return previewStart(deps.db.sql, t, limit);
}

/**
 * Sends the turn's first model call before the turn is recorded when the
 * preview says the start will pass and the tools are listed; else undefined
 * (the runner calls once the turn is recorded).
 */
async function sendFirstCall(deps: ChatHandlerDeps, agent: AgentRow, t: NewTurn, tools: Promise<AgentTool[] | undefined>, preview: Promise<StartPreview>): Promise<FirstCall | undefined> {
  try {
    const [listed, seen] = await Promise.all([tools, preview]);
    if (!seen.wouldStart || listed === undefined) return undefined;
    const { CHAT_MAX_OUTPUT_TOKENS: maxOutputTokens, CHAT_MODEL_DEADLINE_MS: deadlineMs } = deps.settings;
    return beginFirstCall(deps.model!, { agent, tier: t.tier, message: t.message, tools: listed, history: seen.history, maxOutputTokens, deadlineMs });
  } catch {
    return undefined;
  }
}

/** The ChatService registration. */
export function createChatHandlers(deps: ChatHandlerDeps): ServiceRegistration {
  return register(ChatService, {
    async *chat(req, ctx) {
      const p = userOf(ctx);
      requireUser(p);
      if (deps.model === undefined) throw modelNotConfigured();
      const agent = await agentFor(deps, p, req.agentId);
      const t = newTurn(deps, p, req.conversationId, agent.id, req.message);
      // The user's tools and the conversation's history are read, and the
      // model asked (model-call.ts), while the turn is being recorded.
      const tools = deps.tools.list(p.userId, ctx.signal).catch(() => undefined);
      const preview = previewOf(deps, t, limitsOf(p.tier).concurrentTurns);
      preview.catch(() => {}); // the runner reads the history itself; start_turn decides
      const first = sendFirstCall(deps, agent, t, tools, preview);
      let turn: TurnRow;
      try {
        turn = await startTurn(deps, p, t, agent);
      } catch (err) {
        void first.then((f) => f?.abort(err));
        throw err;
      }
      const history = preview.then((seen) => seen.history).catch(() => loadHistory(deps.db.sql, turn.conversation_id));
      deps.runner.start(turn, true, { tools, history, first });
      try {
        yield* followTurn(deps, turn.id, 0, ctx.signal);
      } finally {
        // The caller gave up: stop the model and the tool calls (unless asked to keep running).
        // A shutdown instead lets another instance finish the turn.
        if (ctx.signal.aborted && !deps.shutdownSignal.aborted && !req.keepRunning) deps.runner.stop(turn.id, "cancel");
      }
    },

    async *resumeTurn(req, ctx) {
      const p = userOf(ctx);
      const turn = await ownTurn(deps, p, req.conversationId, req.turnId);
      for await (const event of followTurn(deps, turn.id, Number(req.afterSequence), ctx.signal)) yield { event };
    },

    async approveToolCall(req, ctx) {
      const p = userOf(ctx);
      const turn = await ownTurn(deps, p, req.conversationId, req.turnId);
      const [row] = await deps.db.sql<{ approved: boolean | null }[]>`
        select approved from chat.approvals where turn_id = ${turn.id} and call_id = ${req.callId}`;
      if (row === undefined) throw new ConnectError(`tool call "${req.callId}" of this turn is not waiting for approval`, Code.NotFound);
      if (row.approved !== null) {
        if (row.approved === req.approved) return {};
        throw new ConnectError(`tool call "${req.callId}" was already ${row.approved ? "approved" : "refused"}`, Code.FailedPrecondition);
      }
      if (turn.state !== "running") throw new ConnectError("the turn is over; its approval requests expired with it", Code.FailedPrecondition);
      const updated = await deps.db.sql`
        update chat.approvals set approved = ${req.approved}, answered_at = now()
        where turn_id = ${turn.id} and call_id = ${req.callId} and approved is null returning 1`;
      if (updated.length === 0) throw new ConnectError(`tool call "${req.callId}" was answered meanwhile`, Code.FailedPrecondition);
      deps.nats?.publish(approvalSubject(turn.id));
      return {};
    },
  });
}
