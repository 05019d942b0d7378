/**
 * AgentService: the catalogue, whether a user may set an agent up, and agent
 * runs. A run is a turn started in the background from the run's input, in
 * a conversation of its own; it is as durable as any turn (another instance
 * finishes it if this one stops), and its end is recorded, with the outbox
 * event AgentRunFinished, in the transaction that ends the turn.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { AgentRunState, AgentService, AgentSchema, AgentRunSchema, type AgentRun } from "../../gen/switchyard/chat/v1/agent_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { AgentRunFinishedSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { type Events, type Principal, register, SERVICE_ROLE, type ServiceRegistration, type Sql, type TransactionSql } from "../../platform/index.js";
import { listAgents, loadAgent, type AgentRow } from "./agents.js";
import { userOf, type ChatHandlerDeps } from "./chat-service.js";
import { limitsOf } from "./limits.js";
import { loadTurn, startTurnRow, type NewTurn, type TurnEnd, type TurnRow } from "./store.js";
import { checkToolArguments } from "./tool-args.js";
import { followTurn } from "./turn-feed.js";
import { checkSetUp, hasSetUp } from "./user-agents.js";

/** Largest run input accepted, as JSON text (the contract's 256 KiB). */
const maxInputBytes = 256 * 1024;
const idempotencyWindowMs = 24 * 3600_000;

interface RunRow {
  readonly id: string;
  readonly user_id: string;
  readonly agent_id: string;
  readonly turn_id: string;
  readonly conversation_id: string;
  readonly input: JsonObject;
  readonly idempotency_key: string | null;
  readonly state: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  readonly output: JsonObject | null;
  readonly error_message: string;
  readonly created_at: Date;
  readonly started_at: Date | null;
  readonly finished_at: Date | null;
  readonly input_tokens: string;
  readonly output_tokens: string;
  readonly tool_calls: number;
  /** created_at in microseconds since the epoch (exact, for page tokens). */
  readonly cursor: string;
}

const runStates: Record<RunRow["state"], AgentRunState> = {
  queued: AgentRunState.QUEUED,
  running: AgentRunState.RUNNING,
  succeeded: AgentRunState.SUCCEEDED,
  failed: AgentRunState.FAILED,
  cancelled: AgentRunState.CANCELLED,
};

function isService(p: Principal): boolean {
  return p.roles.includes(SERVICE_ROLE);
}

/** The user a call acts for: a user only for themself, a service for the user it names. */
function actingUser(p: Principal, requested: string): string {
  if (requested === "") {
    if (isService(p)) throw new ConnectError("user_id: is required when a service calls", Code.InvalidArgument);
    return p.userId;
  }
  if (!isService(p) && requested !== p.userId) throw new ConnectError("user_id: a user may act only for themself", Code.PermissionDenied);
  return requested;
}

function toAgent(a: AgentRow) {
  return create(AgentSchema, {
    name: `agents/${a.id}`,
    agentId: a.id,
    displayName: a.display_name,
    description: a.description,
    minTier: a.min_tier,
    tools: [...(a.tools ?? [])],
    inputSchema: a.input_schema as JsonObject,
  });
}

function toRun(r: RunRow): AgentRun {
  return create(AgentRunSchema, {
    name: `users/${r.user_id}/agentRuns/${r.id}`,
    runId: r.id,
    agentId: r.agent_id,
    userId: r.user_id,
    state: runStates[r.state],
    input: r.input,
    output: r.output ?? undefined,
    errorMessage: r.error_message,
    usage: { inputTokens: BigInt(r.input_tokens), outputTokens: BigInt(r.output_tokens), toolCalls: r.tool_calls },
    createTime: timestampFromDate(r.created_at),
    startTime: r.started_at ? timestampFromDate(r.started_at) : undefined,
    endTime: r.finished_at ? timestampFromDate(r.finished_at) : undefined,
    conversationId: r.conversation_id,
    turnId: r.turn_id,
  });
}

const runColumns = (sql: Sql | TransactionSql) => sql`
  r.id, r.user_id, r.agent_id, r.turn_id, r.conversation_id, r.input, r.idempotency_key, r.state, r.output, r.error_message,
  r.created_at, r.started_at, r.finished_at, t.input_tokens, t.output_tokens, t.tool_calls,
  (extract(epoch from r.created_at) * 1000000)::bigint::text as cursor`;

async function loadRun(sql: Sql | TransactionSql, runId: string): Promise<RunRow | undefined> {
  const [row] = await sql<RunRow[]>`select ${runColumns(sql)} from chat.agent_runs r join chat.turns t on t.id = r.turn_id where r.id = ${runId}`;
  return row;
}

/** The tier a run for `userId` runs with: the caller's own, or (for a service) the tier of the user's latest turn. */
async function tierFor(sql: Sql, p: Principal, userId: string): Promise<Tier> {
  if (!isService(p)) return p.tier;
  const [row] = await sql<{ tier: Tier }[]>`select tier from chat.turns where user_id = ${userId} order by created_at desc limit 1`;
  return row?.tier ?? Tier.FREE;
}

/** Records a run's end inside the transaction that ends its turn, with AgentRunFinished in the outbox. */
export async function recordRunEnd(tx: TransactionSql, events: Events, turn: TurnRow, end: TurnEnd, finalText: string): Promise<void> {
  const state = end.state === "done" ? "succeeded" : end.state;
  const output = end.state === "done" ? { text: finalText } : null;
  const message = end.state === "failed" ? end.message : "";
  const [run] = await tx<{ id: string; agent_id: string; started_at: Date }[]>`
    update chat.agent_runs set state = ${state}, output = ${output === null ? null : tx.json(output)}, error_message = ${message}, finished_at = now()
    where turn_id = ${turn.id} and state in ('queued', 'running') returning id, agent_id, started_at`;
  if (run === undefined) return;
  const now = new Date();
  await events.publish(
    tx,
    AgentRunFinishedSchema,
    create(AgentRunFinishedSchema, {
      userId: turn.user_id,
      runId: run.id,
      agentId: run.agent_id,
      state: runStates[state],
      errorMessage: message,
      usage: { inputTokens: BigInt(end.inputTokens), outputTokens: BigInt(end.outputTokens), toolCalls: end.toolCalls },
      duration: durationFromMs(now.getTime() - run.started_at.getTime()),
      occurTime: timestampFromDate(now),
    }),
  );
}

function pageTokenOf(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

function readPageToken<T>(token: string, valid: (v: unknown) => v is T): T | undefined {
  if (token === "") return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (valid(v)) return v;
  } catch {
    /* fall through */
  }
  throw new ConnectError("page_token: is malformed or came from another list", Code.InvalidArgument);
}

/** What the handlers are built from. */
export interface AgentHandlerDeps extends ChatHandlerDeps {
  readonly events: Events;
}

/** The AgentService registration. */
export function createAgentHandlers(deps: AgentHandlerDeps): ServiceRegistration {
  const { db } = deps;

  async function startRun(p: Principal, userId: string, agent: AgentRow, input: JsonObject, key: string): Promise<RunRow> {
    const tier = await tierFor(db.sql, p, userId);
    if (tier < agent.min_tier) throw new ConnectError(`agent "${agent.id}" needs the ${Tier[agent.min_tier]!.toLowerCase()} tier or higher`, Code.PermissionDenied);
    if (!(await hasSetUp(db.sql, userId, agent.id))) {
      throw new ConnectError(`agent "${agent.id}" is not set up for this user: set it up with a Chat turn naming its agent_id`, Code.FailedPrecondition);
    }
    const runId = randomUUID();
    const turnId = randomUUID();
    const existing = await db.tx(async (tx) => {
      if (key !== "") {
        const [prior] = await tx<(RunRow & { fresh: boolean })[]>`
          select ${runColumns(tx)}, r.created_at > now() - ${idempotencyWindowMs} * interval '1 millisecond' as fresh
          from chat.agent_runs r join chat.turns t on t.id = r.turn_id where r.user_id = ${userId} and r.idempotency_key = ${key}`;
        if (prior !== undefined && prior.fresh) {
          if (prior.agent_id !== agent.id || JSON.stringify(prior.input) !== JSON.stringify(input)) {
            throw new ConnectError("idempotency_key: was used with a different agent_id or input", Code.AlreadyExists);
          }
          return prior;
        }
        if (prior !== undefined) await tx`update chat.agent_runs set idempotency_key = null where id = ${prior.id}`;
      }
      const limit = limitsOf(tier).concurrentTurns;
      const conversationId = randomUUID();
      const message = `Run the task described by this input (JSON):\n${JSON.stringify(input)}`;
      const deadline = new Date(Date.now() + deps.settings.CHAT_TURN_DEADLINE_MS);
      const turn: NewTurn = { id: turnId, conversationId, newConversation: true, userId, tier, agentId: agent.id, message, deadline };
      if ((await startTurnRow(tx, turn, deps.instanceId, deps.settings.CHAT_TURN_LEASE_MS, limit)) === "limit") {
        throw new ConnectError(`the user has ${limit} turn(s) or run(s) in flight, as many as their tier allows: try again when one ends`, Code.ResourceExhausted);
      }
      await tx`
        insert into chat.agent_runs (id, user_id, agent_id, turn_id, conversation_id, input, idempotency_key, state, started_at)
        values (${runId}, ${userId}, ${agent.id}, ${turnId}, ${conversationId}, ${tx.json(input)}, ${key === "" ? null : key}, 'running', now())`;
      return undefined;
    });
    if (existing !== undefined) return existing;
    deps.runner.start((await loadTurn(db.sql, turnId))!, true);
    return (await loadRun(db.sql, runId))!;
  }

  async function ownRun(p: Principal, runId: string): Promise<RunRow> {
    const run = await loadRun(db.sql, runId);
    if (run === undefined || (!isService(p) && run.user_id !== p.userId)) throw new ConnectError(`run "${runId}" not found`, Code.NotFound);
    return run;
  }

  return register(AgentService, {
    async listCatalog(req) {
      const after = readPageToken(req.pageToken, (v): v is string => typeof v === "string") ?? "";
      const size = req.pageSize === 0 ? 50 : req.pageSize;
      const rows = await listAgents(db.sql, after, size + 1);
      const page = rows.slice(0, size);
      return { agents: page.map(toAgent), nextPageToken: rows.length > size ? pageTokenOf(page.at(-1)!.id) : "" };
    },

    async canCreate(req, ctx) {
      const p = userOf(ctx);
      const agent = req.agentId === "" ? undefined : await loadAgent(db.sql, req.agentId);
      if (agent === undefined) throw new ConnectError(`agent "${req.agentId}" is not in the catalog`, Code.NotFound);
      const check = await checkSetUp(db.sql, p.userId, p.tier, agent);
      return { allowed: check.allowed, denial: check.denial, reason: check.reason, tier: p.tier, requiredTier: agent.min_tier, used: check.used, limit: check.limit };
    },

    async trigger(req, ctx) {
      const p = userOf(ctx);
      const userId = actingUser(p, req.userId);
      const agent = await loadAgent(db.sql, req.agentId);
      if (agent === undefined || agent.id === "") throw new ConnectError(`agent "${req.agentId}" is not in the catalog`, Code.NotFound);
      const input = req.input ?? {};
      const size = Buffer.byteLength(JSON.stringify(input));
      if (size > maxInputBytes) throw new ConnectError(`input: must be at most ${maxInputBytes} bytes, got ${size}`, Code.InvalidArgument);
      const checked = checkToolArguments(JSON.stringify(input), agent.input_schema);
      if (!checked.ok) throw new ConnectError(`input: ${checked.error.replace("the arguments", "the input").replace("the tool's schema", "the agent's input_schema")}`, Code.InvalidArgument);
      return { run: toRun(await startRun(p, userId, agent, input, req.idempotencyKey)) };
    },

    async getRun(req, ctx) {
      return { run: toRun(await ownRun(userOf(ctx), req.runId)) };
    },

    async listRuns(req, ctx) {
      const userId = actingUser(userOf(ctx), req.userId);
      const size = req.pageSize === 0 ? 50 : req.pageSize;
      const after = readPageToken(req.pageToken, (v): v is { t: string; i: string } => typeof v === "object" && v !== null && typeof (v as { t?: unknown }).t === "string" && /^\d{1,20}$/.test((v as { t: string }).t) && typeof (v as { i?: unknown }).i === "string");
      const rows = after === undefined
        ? await db.sql<RunRow[]>`select ${runColumns(db.sql)} from chat.agent_runs r join chat.turns t on t.id = r.turn_id
            where r.user_id = ${userId} order by r.created_at desc, r.id desc limit ${size + 1}`
        : await db.sql<RunRow[]>`select ${runColumns(db.sql)} from chat.agent_runs r join chat.turns t on t.id = r.turn_id
            where r.user_id = ${userId} and (r.created_at, r.id) < ('epoch'::timestamptz + ${after.t}::bigint * interval '1 microsecond', ${after.i})
            order by r.created_at desc, r.id desc limit ${size + 1}`;
      const page = rows.slice(0, size);
      const last = page.at(-1);
      return { runs: page.map(toRun), nextPageToken: rows.length > size && last ? pageTokenOf({ t: last.cursor, i: last.id }) : "" };
    },

    async *streamRun(req, ctx) {
      const run = await ownRun(userOf(ctx), req.runId);
      for await (const event of followTurn(deps, run.turn_id, Number(req.afterSequence), ctx.signal)) yield { event };
    },
  });
}
