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
import { loadAgent } from "./agents.js";
import { limitsOf } from "./limits.js";
import { modelNotConfigured, type ModelProvider } from "./model/index.js";
import type { ChatSettings } from "./settings.js";
import { loadHistory, loadTurn, startTurnRow, type NewTurn, type TurnRow } from "./store.js";
import { followTurn, type FeedDeps } from "./turn-feed.js";
import { approvalSubject, type TurnRunner } from "./turn-runner.js";
import { setUpAgent } from "./user-agents.js";
import type { ToolSource } from "./tools.js";
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

/**
 * Creates a turn (and its conversation, if new) under the caller's limits;
 * returns the stored turn. The default assistant's turn is one statement (one
 * round trip); an agent's turn also sets the agent up, in the same transaction.
 */
async function startTurn(deps: ChatHandlerDeps, p: Principal, conversationId: string, agentId: string, message: string): Promise<TurnRow> {
  const agent = await loadAgent(deps.db.sql, agentId);
  if (agent === undefined) throw new ConnectError(`agent "${agentId}" is not in the catalog (AgentService.ListCatalog lists it)`, Code.NotFound);
  if (p.tier < agent.min_tier) throw new ConnectError(`agent "${agentId}" needs the ${Tier[agent.min_tier]?.toLowerCase()} tier or higher`, Code.PermissionDenied);
  const t: NewTurn = {
    id: randomUUID(),
    conversationId: conversationId || randomUUID(),
    newConversation: conversationId === "",
    userId: p.userId,
    tier: p.tier,
    agentId,
    message,
    deadline: new Date(Date.now() + deps.settings.CHAT_TURN_DEADLINE_MS),
  };
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
  if (outcome === "not_found") throw new ConnectError(`conversation "${conversationId}" not found`, Code.NotFound);
  if (outcome === "busy") throw new ConnectError("a turn of this conversation is still running: follow it with ResumeTurn, or wait until it ends", Code.FailedPrecondition);
  if (outcome === "limit") throw new ConnectError(`you have ${limit} turn(s) running, as many as your tier allows: wait for one to end`, Code.ResourceExhausted);
  return { id: t.id, conversation_id: t.conversationId, user_id: p.userId, tier: p.tier, agent_id: agentId, message, state: "running", deadline: t.deadline, error_code: 0, error_message: "", lease_owner: deps.instanceId };
}

/** The ChatService registration. */
export function createChatHandlers(deps: ChatHandlerDeps): ServiceRegistration {
  return register(ChatService, {
    async *chat(req, ctx) {
      const p = userOf(ctx);
      requireUser(p);
      if (deps.model === undefined) throw modelNotConfigured();
      // The user's tools and the conversation's history are read while the
      // turn is created, so the model is asked as soon as the turn exists.
      // Both are dropped unused when the start is refused (another user's
      // conversation included); a new conversation has no history to read.
      const tools = deps.tools.list(p.userId, ctx.signal).catch(() => undefined);
      const history = req.conversationId === "" ? Promise.resolve([]) : loadHistory(deps.db.sql, req.conversationId);
      history.catch(() => {}); // read again by the runner if it failed; unused if the start fails
      const turn = await startTurn(deps, p, req.conversationId, req.agentId, req.message);
      deps.runner.start(turn, true, { tools, history: history.catch(() => loadHistory(deps.db.sql, turn.conversation_id)) });
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
