/**
 * One model call of a turn, and a fresh turn's first call begun before the
 * turn is recorded.
 *
 * A fresh turn's first request depends only on what the caller knows before
 * `start_turn` commits (agent, message, tools, history), so the Chat handler
 * sends it while the turn is being recorded: the provider's time to first
 * token then covers the commit instead of following it. It is sent only when
 * a preview says the start will pass (chat-service.ts previewOf): for an
 * existing conversation, a read of what `start_turn` checks, made with the
 * history the request needs anyway; for a new one, whose start is refused
 * only at the user's limit of running turns, the turns this instance runs.
 * A refused start therefore costs a provider request only when starts race
 * or the user's other turns run on other instances, and that request is
 * aborted as soon as the refusal is known.
 */
import type { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import type { AgentRow } from "./agents.js";
import { limitsOf } from "./limits.js";
import { providerSafeToolNames, type ModelEvent, type ModelMessage, type ModelProvider, type ModelRequest } from "./model/index.js";
import { messagesOfSteps, usageOfSteps, type TurnStep } from "./steps.js";
import type { AgentTool } from "./tools.js";

/** A model call under way: its events, when it began, and the deadline that bounds it. */
export interface ModelCall {
  readonly events: AsyncIterable<ModelEvent>;
  readonly began: number;
  readonly deadline: AbortSignal;
}

/** A fresh turn's first model call, begun before its turn was recorded, with what it was built from. */
export interface FirstCall {
  readonly call: ModelCall;
  /** The tools offered, by provider-safe name. */
  readonly tools: Map<string, AgentTool>;
  readonly history: ModelMessage[];
  /** Aborts the request (the start was refused, or the turn stopped). */
  abort(reason?: unknown): void;
}

/** The tools `agent` may use out of the user's, by provider-safe name. */
export function offeredTools(agent: AgentRow, all: readonly AgentTool[]): Map<string, AgentTool> {
  const allowed = agent.tools === undefined ? all : all.filter((t) => agent.tools!.includes(t.name));
  const safe = providerSafeToolNames(allowed.map((t) => t.name));
  return new Map(allowed.map((t) => [safe.get(t.name)!, t]));
}

/** What a turn's next model call is built from. */
export interface NextCallInput {
  readonly agent: AgentRow;
  readonly tier: Tier;
  /** The user's message of this turn. */
  readonly message: string;
  /** The tools offered, by provider-safe name. */
  readonly tools: Map<string, AgentTool>;
  readonly history: ModelMessage[];
  /** The turn's recorded steps (none for its first call). */
  readonly steps: readonly TurnStep[];
  /** CHAT_MAX_OUTPUT_TOKENS. */
  readonly maxOutputTokens: number;
}

/**
 * The request of a turn's next model call: the history, the user's message
 * and what the steps so far said, with the tools; its output bounded by
 * `maxOutputTokens` and by what the tier's per-turn token budget has left.
 * Undefined once that budget is spent. The first call sent early
 * (beginFirstCall) and the runner's calls are built here alike.
 */
export function nextModelRequest(i: NextCallInput): ModelRequest | undefined {
  const used = usageOfSteps(i.steps);
  const budget = limitsOf(i.tier).tokensPerTurn - used.inputTokens - used.outputTokens;
  if (budget <= 0) return undefined;
  return {
    system: i.agent.system_prompt,
    messages: [...i.history, { role: "user", text: i.message }, ...messagesOfSteps(i.steps)],
    tools: [...i.tools].map(([name, t]) => ({ name, description: t.description, inputSchema: t.inputSchema })),
    maxOutputTokens: Math.min(i.maxOutputTokens, budget),
  };
}

/** Calls the model, bounded by `deadlineMs` and `signal`. Nothing is sent until the events are read. */
export function callModel(model: ModelProvider, request: ModelRequest, deadlineMs: number, signal: AbortSignal): ModelCall {
  const deadline = AbortSignal.timeout(deadlineMs);
  return { events: model.stream(request, AbortSignal.any([signal, deadline])), began: performance.now(), deadline };
}

/** What a fresh turn's first call is built from: the user's tools as listed, not yet filtered for the agent. */
export interface FirstCallInput extends Omit<NextCallInput, "tools" | "steps"> {
  readonly tools: readonly AgentTool[];
  readonly deadlineMs: number;
}

/** Sends a fresh turn's first model call now; its events are read later, by the turn's runner. */
export function beginFirstCall(model: ModelProvider, input: FirstCallInput): FirstCall {
  const controller = new AbortController();
  const tools = offeredTools(input.agent, input.tools);
  // A first call's budget is the tier's whole one, never spent.
  const request = nextModelRequest({ ...input, tools, steps: [] })!;
  const call = callModel(model, request, input.deadlineMs, controller.signal);
  return { call: { ...call, events: begun(call.events) }, tools, history: input.history, abort: (reason) => controller.abort(reason) };
}

/**
 * Starts reading `source` now (an async generator sends nothing until its
 * first `next`); the first result is handed to whoever reads it later. Its
 * failure is not reported until then: one never read was aborted.
 */
export function begun<T>(source: AsyncIterable<T>): AsyncIterable<T> {
  const it = source[Symbol.asyncIterator]();
  let first: Promise<IteratorResult<T>> | undefined = it.next();
  first.catch(() => {});
  return {
    [Symbol.asyncIterator]: () => ({
      next: () => {
        const pending = first;
        first = undefined;
        return pending ?? it.next();
      },
      return: async (value?: unknown) => (await it.return?.(value)) ?? { done: true, value: undefined },
    }),
  };
}
