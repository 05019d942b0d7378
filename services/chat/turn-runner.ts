/**
 * Runs turns: model call, tool calls, model call… until the model ends the
 * turn or a limit is reached. Every step is recorded as it finishes (see
 * turn-log.ts), so an instance that picks a turn up after another died
 * continues from the last recorded step: tool calls owed are made again with
 * the same call ids (the gateway returns the first outcome, so nothing runs
 * twice), and an interrupted model call runs again whole, announced by a
 * `restarted` event.
 */
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { NatsConnection } from "@nats-io/nats-core";
import { ChatResponseSchema, FinishReason, type ChatResponse } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import type { Database, Logger, TransactionSql } from "../../platform/index.js";
import { defaultAssistant, loadAgent, type AgentRow } from "./agents.js";
import { limitsOf, tierName } from "./limits.js";
import type { ChatMetrics } from "./metrics.js";
import { type ModelMessage, type ModelProvider, type ModelToolCall } from "./model/index.js";
import type { ChatSettings } from "./settings.js";
import { messagesOfSteps, positionOf, toolCallId, usageOfSteps, type ModelStep, type ToolStep, type TurnStep } from "./steps.js";
import { endTurn, loadEvents, loadHistory, loadSteps, type TurnEnd, type TurnRow } from "./store.js";
import { checkToolArguments } from "./tool-args.js";
import type { AgentTool, ToolOutcome, ToolSource } from "./tools.js";
import type { TurnHub } from "./turn-hub.js";
import { LostTurnError, type TurnLog } from "./turn-log.js";
import { callModel, nextModelRequest, offeredTools, type FirstCall, type ModelCall } from "./model-call.js";

type EventInit = MessageInitShape<typeof ChatResponseSchema>;

/** Why a running turn is stopped from outside. */
export type StopReason = "cancel" | "shutdown" | "lost";

/** Called inside the transaction that ends a turn (agent runs record their end there). */
export type TurnEndHook = (tx: TransactionSql, turn: TurnRow, end: TurnEnd, finalText: string) => Promise<void>;

/** What the runner is built from. */
export interface TurnRunnerDeps {
  readonly db: Database;
  readonly log: Logger;
  readonly turnLog: TurnLog;
  readonly hub: TurnHub;
  readonly tools: ToolSource;
  readonly model: ModelProvider | undefined;
  readonly settings: ChatSettings;
  readonly metrics: ChatMetrics;
  readonly nats: NatsConnection | undefined;
  readonly onEnd?: TurnEndHook;
}

/** The turns this instance runs. */
export interface TurnRunner {
  /** Starts running `turn` in the background: `fresh` when it was just created here (nothing recorded yet), else taken over. */
  start(turn: TurnRow, fresh?: boolean, early?: EarlyReads): void;
  /** Stops a turn this instance runs; "cancel" records it as cancelled. */
  stop(turnId: string, reason: StopReason): void;
  /** The ids of the turns running here. */
  ids(): string[];
  /** Whether `turnId` runs here. */
  has(turnId: string): boolean;
  /** How many of `userId`'s turns run here. */
  runningFor(userId: string): number;
  /** Stops every turn (shutdown) and waits for them to let go. */
  stopAll(): Promise<void>;
}

/**
 * What the caller of a fresh turn read while the turn was being created, so
 * the model is asked sooner: the user's tools (undefined when listing failed:
 * the runner lists again) and the conversation's history.
 */
export interface EarlyReads {
  readonly tools?: Promise<AgentTool[] | undefined>;
  readonly history?: Promise<ModelMessage[]>;
  /** The turn's first model call, sent while the turn was being recorded (model-call.ts), or undefined when it was not. */
  readonly first?: Promise<FirstCall | undefined>;
}

/** The NATS subject that wakes a turn waiting for an approval. */
export function approvalSubject(turnId: string): string {
  return `chat.approval.${turnId}`;
}

/** Creates the runner. */
export function createTurnRunner(deps: TurnRunnerDeps): TurnRunner {
  const running = new Map<string, { userId: string; controller: AbortController; done: Promise<void> }>();
  return {
    start(turn, fresh = false, early) {
      if (running.has(turn.id)) return;
      const controller = new AbortController();
      const done = runTurn(deps, turn, fresh, early ?? {}, controller.signal)
        .catch((err: unknown) => deps.log.error({ err: String(err), turn: turn.id }, "turn runner failed"))
        .finally(() => running.delete(turn.id));
      running.set(turn.id, { userId: turn.user_id, controller, done });
    },
    stop(turnId, reason) {
      running.get(turnId)?.controller.abort(reason);
    },
    ids: () => [...running.keys()],
    has: (turnId) => running.has(turnId),
    runningFor: (userId) => {
      let n = 0;
      for (const r of running.values()) if (r.userId === userId) n++;
      return n;
    },
    async stopAll() {
      const all = [...running.values()];
      for (const r of all) r.controller.abort("shutdown" satisfies StopReason);
      await Promise.all(all.map((r) => r.done));
    },
  };
}

/** A turn being run: its identity, what it has recorded, and how it writes. */
interface TurnState {
  readonly turn: TurnRow;
  readonly agent: AgentRow;
  steps: TurnStep[];
  seq: number;
  /** Call ids whose tool_call_started / approval_requested event was written. */
  readonly started: Set<string>;
  readonly asked: Set<string>;
  /** Text may have been streamed after the last recorded step: a model call was cut off, and the next one starts with `restarted`. */
  partialText: boolean;
  writeError: unknown;
  finalText: string;
}

async function hydrate(deps: TurnRunnerDeps, turn: TurnRow, fresh: boolean): Promise<TurnState> {
  const agent = (await loadAgent(deps.db.sql, turn.agent_id)) ?? defaultAssistant;
  // A fresh turn was recorded with its `started` event (sequence 1) and nothing else.
  if (fresh) return { turn, agent, steps: [], seq: 1, started: new Set(), asked: new Set(), partialText: false, writeError: undefined, finalText: "" };
  const steps = await loadSteps(deps.db.sql, turn.id);
  const state: TurnState = { turn, agent, steps, seq: 0, started: new Set(), asked: new Set(), partialText: false, writeError: undefined, finalText: "" };
  for (let after = 0; ; ) {
    const events = await loadEvents(deps.db.sql, turn.id, after);
    for (const e of events) {
      state.seq = Number(e.sequence);
      if (e.event.case === "toolCallStarted") state.started.add(e.event.value.callId);
      if (e.event.case === "approvalRequested") state.asked.add(e.event.value.callId);
    }
    if (events.length < 500) break;
    after = state.seq;
  }
  // The stopped holder may have streamed one text delta it never recorded (see emitText):
  // its number is not given again, so a client holding it resumes after it.
  state.seq += 1;
  // With a model call next, it may have been streaming that call: the client drops the partial text.
  state.partialText = positionOf(steps).next === "model";
  return state;
}

/** Writes events (numbered here, in order) and steps; a failed write stops the turn at its next check. */
function emit(deps: TurnRunnerDeps, s: TurnState, events: EventInit[], step?: (eventSeq: number) => TurnStep, extra?: (tx: TransactionSql) => Promise<void>): Promise<void> {
  const numbered: ChatResponse[] = events.map((e) => create(ChatResponseSchema, { ...e, sequence: BigInt(++s.seq) }));
  const steps = step === undefined ? undefined : [step(s.seq)];
  if (steps !== undefined) s.steps.push(steps[0]!);
  const p = deps.turnLog.write({ turnId: s.turn.id, events: numbered, steps, extra });
  p.catch((err: unknown) => (s.writeError ??= err));
  return p;
}

/**
 * Writes a text delta, handing it to this instance's streams before the
 * commit rather than after, so the client reads the model's text as it
 * comes. Safe because the delta writer has one write in flight at a time:
 * an instance that dies leaves at most one delta streamed but unrecorded,
 * with the turn's highest number, which the instance taking over skips
 * (hydrate) while announcing `restarted`. After a failed write nothing more
 * is streamed, so that bound holds.
 */
function emitText(deps: TurnRunnerDeps, s: TurnState, text: string): Promise<void> {
  if (s.writeError !== undefined) return Promise.resolve();
  const event = create(ChatResponseSchema, { event: { case: "textDelta", value: { text } }, sequence: BigInt(++s.seq) });
  deps.hub.emit(s.turn.id, [event]);
  const p = deps.turnLog.write({ turnId: s.turn.id, events: [event], announced: true });
  p.catch((err: unknown) => (s.writeError ??= err));
  return p;
}

function checkWrites(s: TurnState): void {
  if (s.writeError !== undefined) throw s.writeError;
}

async function runTurn(deps: TurnRunnerDeps, turn: TurnRow, fresh: boolean, early: EarlyReads, signal: AbortSignal): Promise<void> {
  const s = await hydrate(deps, turn, fresh);
  const untilDeadline = turn.deadline.getTime() - Date.now();
  const deadline = AbortSignal.timeout(Math.max(0, untilDeadline));
  const both = AbortSignal.any([signal, deadline]);
  try {
    if (deps.model === undefined) throw new ConnectError("no language model is configured on this instance: set LLM_PROVIDER, LLM_API_KEY and LLM_MODEL", Code.FailedPrecondition);
    const first = fresh ? await early.first : undefined;
    if (first !== undefined) abortWith(both, first);
    const [tools, history] =
      first !== undefined ? [first.tools, first.history] : await Promise.all([listTools(deps, s, early.tools, both), early.history ?? loadHistory(deps.db.sql, turn.conversation_id)]);
    await loop(deps, s, tools, history, both, first?.call);
  } catch (err) {
    await ended(deps, s, err, signal, deadline);
  }
}

/** Aborts `first` with `signal`: the request was sent before the turn had a signal of its own. */
function abortWith(signal: AbortSignal, first: FirstCall): void {
  if (signal.aborted) first.abort(signal.reason);
  else signal.addEventListener("abort", () => first.abort(signal.reason), { once: true });
}

/** The tools offered this turn (listed early by the caller, or now): the user's tools the agent may use, with provider-safe names. */
async function listTools(deps: TurnRunnerDeps, s: TurnState, early: Promise<AgentTool[] | undefined> | undefined, signal: AbortSignal): Promise<Map<string, AgentTool>> {
  let all: AgentTool[] = [];
  try {
    all = (await early) ?? (await deps.tools.list(s.turn.user_id, signal));
  } catch (err) {
    if (signal.aborted) throw err;
    // The model is still asked; a tool it names anyway is answered "unavailable".
    deps.log.warn({ err: String(err), turn: s.turn.id }, "could not list the user's tools; the turn runs without them");
  }
  return offeredTools(s.agent, all);
}

async function loop(deps: TurnRunnerDeps, s: TurnState, tools: Map<string, AgentTool>, history: ModelMessage[], signal: AbortSignal, firstCall: ModelCall | undefined): Promise<void> {
  const limits = limitsOf(s.turn.tier);
  let sent = firstCall;
  for (;;) {
    checkWrites(s);
    signal.throwIfAborted();
    const pos = positionOf(s.steps);
    if (pos.next === "finish") return finish(deps, s, pos.model.finish === "length" ? FinishReason.MAX_TOKENS : FinishReason.END_TURN);
    if (pos.next === "tools") {
      const hitLimit = await runToolCalls(deps, s, tools, pos.model, pos.owed, limits.toolCallsPerTurn, signal);
      if (hitLimit) return finish(deps, s, FinishReason.MAX_TOOL_CALLS);
      continue;
    }
    let call = sent;
    sent = undefined;
    if (call === undefined) {
      const request = nextModelRequest({ agent: s.agent, tier: s.turn.tier, message: s.turn.message, tools, history, steps: s.steps, maxOutputTokens: deps.settings.CHAT_MAX_OUTPUT_TOKENS });
      if (request === undefined) return finish(deps, s, FinishReason.MAX_TOKENS);
      call = callModel(deps.model!, request, deps.settings.CHAT_MODEL_DEADLINE_MS, signal);
    }
    await modelStep(deps, s, call, pos.step, signal);
  }
}

/** One model call, streamed to the client and recorded whole when it ends. */
async function modelStep(deps: TurnRunnerDeps, s: TurnState, call: ModelCall, step: number, signal: AbortSignal): Promise<void> {
  if (s.partialText) {
    void emit(deps, s, [{ event: { case: "restarted", value: { reason: "the chat instance running this turn stopped mid-answer; the answer starts again" } } }]);
    s.partialText = false;
  }
  const deltas = createDeltaWriter(deps, s);
  let first = true;
  let text = "";
  const toolCalls: ModelToolCall[] = [];
  try {
    for await (const ev of call.events) {
      checkWrites(s);
      if (first && ev.type !== "done") {
        deps.metrics.timeToFirstToken.observe({ provider: deps.model!.provider }, (performance.now() - call.began) / 1000);
        first = false;
      }
      if (ev.type === "text") {
        text += ev.delta;
        s.partialText = true;
        deltas.push(ev.delta);
      } else if (ev.type === "tool_call") {
        toolCalls.push(ev.call);
      } else {
        const tier = tierName(s.turn.tier);
        deps.metrics.tokens.inc({ tier, direction: "input" }, ev.usage.inputTokens);
        deps.metrics.tokens.inc({ tier, direction: "output" }, ev.usage.outputTokens);
        const recorded: (seq: number) => ModelStep = (eventSeq) => ({
          kind: "model",
          step,
          text,
          toolCalls,
          inputTokens: ev.usage.inputTokens,
          outputTokens: ev.usage.outputTokens,
          finish: ev.finishReason,
          eventSeq,
        });
        deltas.close();
        const written = emit(deps, s, [], recorded);
        s.partialText = false;
        // Tool calls run only once the step naming them is recorded (their ids come from it);
        // a final answer's step commits with the turn's end instead (finish, next in the loop).
        if (toolCalls.length > 0) await written;
        else s.finalText = text;
        return;
      }
    }
    throw new ConnectError("the model's answer ended without a finish", Code.Unavailable);
  } catch (err) {
    deltas.discard();
    if (call.deadline.aborted && !signal.aborted) {
      throw new ConnectError(`the language model did not finish its answer within ${deps.settings.CHAT_MODEL_DEADLINE_MS} ms; try again`, Code.Unavailable);
    }
    throw err;
  }
}

/**
 * After the first text delta of a model call, text goes to the turn log at
 * most once per interval: one event a display frame or so, instead of one
 * per token, so a busy instance commits, fans out and sends a fraction of
 * the events without a reader seeing any difference.
 */
const deltaIntervalMs = 16;

/**
 * Text deltas on their way to the client and the turn log (emitText): the
 * first goes at once; later ones wait for the interval and for the write
 * before them to commit, and go together as one delta. The client still
 * gets every character in order.
 */
function createDeltaWriter(deps: TurnRunnerDeps, s: TurnState) {
  let pending = "";
  let inflight: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let lastSent = Number.NEGATIVE_INFINITY;
  const flush = (): void => {
    timer = undefined;
    if (pending === "") return;
    const text = pending;
    pending = "";
    lastSent = performance.now();
    inflight = emitText(deps, s, text).then(
      () => ((inflight = undefined), schedule()),
      () => void (inflight = undefined),
    );
  };
  const schedule = (): void => {
    if (pending === "" || inflight !== undefined || timer !== undefined) return;
    const wait = lastSent + deltaIntervalMs - performance.now();
    if (wait <= 0) flush();
    else timer = setTimeout(flush, wait);
  };
  return {
    push(delta: string): void {
      pending += delta;
      schedule();
    },
    /**
     * Queues what waits now, ahead of the step's record. Streamed before its
     * commit only when no other delta is in flight, so one unrecorded delta
     * at most is ever streamed (emitText); else it streams once committed.
     */
    close(): void {
      clearTimeout(timer);
      timer = undefined;
      if (pending === "") return;
      if (inflight === undefined) return flush();
      void emit(deps, s, [{ event: { case: "textDelta", value: { text: pending } } }]);
      pending = "";
    },
    /** Drops what waits (the model call failed; its text is not recorded). */
    discard(): void {
      clearTimeout(timer);
      timer = undefined;
      pending = "";
    },
  };
}

/** Runs the owed tool calls of `model` at once; true when the tier's tool-call limit refused some. */
async function runToolCalls(deps: TurnRunnerDeps, s: TurnState, tools: Map<string, AgentTool>, model: ModelStep, owed: readonly number[], limit: number, signal: AbortSignal): Promise<boolean> {
  const before = s.steps.filter((st) => st.kind === "tool" && st.step < model.step).length;
  let hitLimit = false;
  await Promise.all(
    owed.map(async (step) => {
      const index = step - model.step - 1;
      const overLimit = before + index >= limit;
      hitLimit ||= overLimit;
      await toolStep(deps, s, tools, model.toolCalls[index]!, step, overLimit, limit, signal);
    }),
  );
  return hitLimit;
}

async function toolStep(deps: TurnRunnerDeps, s: TurnState, tools: Map<string, AgentTool>, call: ModelToolCall, step: number, overLimit: boolean, limit: number, signal: AbortSignal): Promise<void> {
  const callId = toolCallId(s.turn.id, step);
  const tool = tools.get(call.name);
  const toolName = tool?.name ?? call.name;
  const checked = tool === undefined ? undefined : checkToolArguments(call.argumentsJson, tool.inputSchema);
  const args: JsonObject | undefined = checked?.ok ? checked.args : undefined;
  const began = Date.now();
  if (!s.started.has(callId)) {
    s.started.add(callId);
    void emit(deps, s, [{ event: { case: "toolCallStarted", value: { callId, tool: toolName, arguments: args } } }]);
  }
  let outcome: ToolOutcome;
  let label: string;
  if (overLimit) {
    (outcome = { ok: false, code: ToolErrorCode.DENIED, error: `not run: this turn reached its limit of ${limit} tool calls` }), (label = "refused");
  } else if (tool === undefined) {
    outcome = { ok: false, code: ToolErrorCode.UNKNOWN_TOOL, error: `no tool named "${call.name}" is available: none of the user's connected devices declared it` };
    label = "refused";
  } else if (!checked!.ok) {
    (outcome = { ok: false, code: ToolErrorCode.INVALID_ARGUMENTS, error: checked!.error }), (label = "refused");
  } else if (tool.annotations.destructiveHint === true && !tool.annotations.readOnlyHint) {
    const approved = await askApproval(deps, s, callId, tool, args!, signal);
    if (approved) {
      outcome = await deps.tools.call(s.turn.user_id, tool, callId, JSON.stringify(args), deps.settings.CHAT_TOOL_TIMEOUT_MS, signal);
      label = outcome.ok ? "ok" : "error";
    } else {
      (outcome = { ok: false, code: ToolErrorCode.DENIED, error: "the user refused this tool call" }), (label = "denied");
    }
  } else {
    outcome = await deps.tools.call(s.turn.user_id, tool, callId, JSON.stringify(args), deps.settings.CHAT_TOOL_TIMEOUT_MS, signal);
    label = outcome.ok ? "ok" : "error";
  }
  signal.throwIfAborted();
  deps.metrics.toolCalls.inc({ outcome: label });
  const finished: EventInit = {
    event: {
      case: "toolCallFinished",
      value: {
        callId,
        tool: toolName,
        outcome: outcome.ok
          ? { case: "result", value: outcome.result ?? (JSON.parse(outcome.content) as JsonObject) }
          : { case: "error", value: { code: outcome.code ?? ToolErrorCode.FAILED, message: outcome.error.slice(0, 4000) } },
        duration: durationFromMs(Date.now() - began),
      },
    },
  };
  const recorded = (eventSeq: number): ToolStep => ({
    kind: "tool",
    step,
    modelCallId: call.id,
    safeName: call.name,
    tool: tool?.name ?? "",
    ok: outcome.ok,
    content: outcome.ok ? outcome.content : outcome.error,
    code: outcome.ok ? undefined : outcome.code,
    eventSeq,
  });
  // Not awaited: the next model call may start while the outcome commits. Should this
  // instance die first, the instance taking over calls again with the same call id.
  void emit(deps, s, [finished], recorded);
}

/** Asks the user (once, durably) and waits for the answer until the turn's deadline. */
async function askApproval(deps: TurnRunnerDeps, s: TurnState, callId: string, tool: AgentTool, args: JsonObject, signal: AbortSignal): Promise<boolean> {
  if (!s.asked.has(callId)) {
    s.asked.add(callId);
    await emit(
      deps,
      s,
      [{ event: { case: "approvalRequested", value: { callId, tool: tool.name, arguments: args, reason: `"${tool.name}" may delete or overwrite something` } } }],
      undefined,
      async (tx) => void (await tx`insert into chat.approvals (turn_id, call_id) values (${s.turn.id}, ${callId}) on conflict do nothing`),
    );
  }
  let wake: (() => void) | undefined;
  const sub = deps.nats?.subscribe(approvalSubject(s.turn.id), { callback: () => wake?.() });
  try {
    for (;;) {
      checkWrites(s);
      signal.throwIfAborted();
      const [row] = await deps.db.sql<{ approved: boolean | null }[]>`
        select approved from chat.approvals where turn_id = ${s.turn.id} and call_id = ${callId}`;
      if (row !== undefined && row.approved !== null) return row.approved;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, 1000);
        function done() {
          clearTimeout(t);
          signal.removeEventListener("abort", done);
          resolve();
        }
        wake = done;
        signal.addEventListener("abort", done, { once: true });
      });
    }
  } finally {
    sub?.unsubscribe();
  }
}

async function finish(deps: TurnRunnerDeps, s: TurnState, reason: FinishReason): Promise<void> {
  const used = usageOfSteps(s.steps);
  const end: TurnEnd = {
    state: "done",
    finishReason: reason,
    ...used,
    history: [{ role: "user", text: s.turn.message }, ...messagesOfSteps(s.steps)],
  };
  const finalText = s.finalText || ([...s.steps].reverse().find((st): st is ModelStep => st.kind === "model")?.text ?? "");
  await emit(
    deps,
    s,
    [{ event: { case: "done", value: { finishReason: reason, usage: { inputTokens: BigInt(used.inputTokens), outputTokens: BigInt(used.outputTokens), toolCalls: used.toolCalls } } } }],
    undefined,
    async (tx) => {
      await endTurn(tx, { id: s.turn.id, conversationId: s.turn.conversation_id }, end);
      await deps.onEnd?.(tx, s.turn, end, finalText);
    },
  );
  deps.metrics.turns.inc({ tier: tierName(s.turn.tier), outcome: "done" });
  deps.hub.ended(s.turn.id, undefined);
}

/** How a turn that threw ends: cancelled, failed with a code, or let go (shutdown, lost lease, database gone). */
async function ended(deps: TurnRunnerDeps, s: TurnState, err: unknown, signal: AbortSignal, deadline: AbortSignal): Promise<void> {
  const reason = signal.aborted ? (signal.reason as StopReason) : undefined;
  if (reason === "shutdown" || reason === "lost" || err instanceof LostTurnError || s.writeError !== undefined) {
    if (s.writeError !== undefined && !(s.writeError instanceof LostTurnError)) deps.log.warn({ err: String(s.writeError), turn: s.turn.id }, "could not record the turn; another instance will take it over");
    return;
  }
  const used = usageOfSteps(s.steps);
  let end: TurnEnd;
  let error: ConnectError;
  if (reason === "cancel") {
    end = { state: "cancelled", ...used };
    error = new ConnectError("the turn was cancelled before it finished", Code.Canceled);
  } else {
    error = deadline.aborted
      ? new ConnectError(`the turn did not finish before its deadline (${deps.settings.CHAT_TURN_DEADLINE_MS} ms)`, Code.DeadlineExceeded)
      : err instanceof ConnectError
        ? err
        : new ConnectError(`the turn failed: ${String(err)}`, Code.Internal);
    if (!(err instanceof ConnectError) && !deadline.aborted) deps.log.error({ err: err instanceof Error ? err.stack : String(err), turn: s.turn.id }, "turn failed");
    end = { state: "failed", code: error.code, message: error.rawMessage, ...used };
  }
  try {
    await emit(deps, s, [], undefined, async (tx) => {
      await endTurn(tx, { id: s.turn.id, conversationId: s.turn.conversation_id }, end);
      await deps.onEnd?.(tx, s.turn, end, "");
    });
  } catch (e) {
    deps.log.warn({ err: String(e), turn: s.turn.id }, "could not record the end of the turn");
    return;
  }
  deps.metrics.turns.inc({ tier: tierName(s.turn.tier), outcome: end.state });
  deps.hub.ended(s.turn.id, error);
}
