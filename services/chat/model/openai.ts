/**
 * The OpenAI adapter: Chat Completions streaming through the official `openai`
 * SDK, which also serves every OpenAI-compatible server (vLLM, llama.cpp's
 * server, Ollama's /v1) through LLM_BASE_URL.
 */
import OpenAI from "openai";
import type {
  ChatCompletionChunk,
  ChatCompletionMessageParam,
  ChatCompletionTool,
} from "openai/resources/chat/completions/completions";
import type { ProviderFailure } from "./errors.js";
import { providerError } from "./errors.js";
import { guardStream } from "./guard.js";
import { sdkClientOptions, type ProviderOptions } from "./sdk-options.js";
import type { ModelEvent, ModelFinishReason, ModelMessage, ModelProvider, ModelRequest, ModelTool, ModelUsage } from "./types.js";

/** What the adapter needs to know. */
export type OpenAIProviderOptions = ProviderOptions;

/** A ModelProvider over the Chat Completions streaming API. */
export function createOpenAIProvider(options: OpenAIProviderOptions): ModelProvider {
  const client = new OpenAI(sdkClientOptions(options));
  const label = { provider: "openai", model: options.model } as const;
  return {
    provider: "openai",
    model: options.model,
    stream: (request, signal) => streamEvents(client, options, request, signal, label),
  };
}

async function* streamEvents(
  client: OpenAI,
  options: OpenAIProviderOptions,
  request: ModelRequest,
  signal: AbortSignal,
  label: { provider: "openai"; model: string },
): AsyncGenerator<ModelEvent> {
  const chunks = guardStream(
    (inner) =>
      client.chat.completions.create(
        {
          model: options.model,
          messages: toOpenAIMessages(request),
          ...(request.tools.length > 0 ? { tools: request.tools.map(toOpenAITool) } : {}),
          // The current name; the older max_tokens is refused by OpenAI's reasoning models.
          max_completion_tokens: request.maxOutputTokens,
          stream: true,
          stream_options: { include_usage: true },
        },
        { signal: inner },
      ),
    { signal, stallMs: options.stallMs, label, classify: classifyOpenAIError },
  );
  const assembler = createOpenAIAssembler();
  for await (const chunk of chunks) yield* assembler.push(chunk);
  const done = assembler.finish();
  if (done === undefined) throw providerError({ kind: "truncated" }, label);
  yield* done;
}

/** The system prompt and conversation as Chat Completions messages. */
export function toOpenAIMessages(request: ModelRequest): ChatCompletionMessageParam[] {
  const out: ChatCompletionMessageParam[] = [];
  if (request.system !== "") out.push({ role: "system", content: request.system });
  for (const message of request.messages) out.push(toOpenAIMessage(message));
  return out;
}

function toOpenAIMessage(message: ModelMessage): ChatCompletionMessageParam {
  switch (message.role) {
    case "user":
      return { role: "user", content: message.text };
    case "assistant":
      return {
        role: "assistant",
        content: message.text === "" && message.toolCalls.length > 0 ? null : message.text,
        ...(message.toolCalls.length > 0
          ? {
              tool_calls: message.toolCalls.map((call) => ({
                id: call.id,
                type: "function" as const,
                function: { name: call.name, arguments: call.argumentsJson },
              })),
            }
          : {}),
      };
    case "tool":
      // Chat Completions has no error flag on a tool result; the prefix tells the model.
      return { role: "tool", tool_call_id: message.toolCallId, content: message.isError ? `Error: ${message.content}` : message.content };
  }
}

function toOpenAITool(tool: ModelTool): ChatCompletionTool {
  return { type: "function", function: { name: tool.name, description: tool.description, parameters: tool.inputSchema } };
}

interface PartialCall {
  id: string;
  name: string;
  args: string;
}

/** Turns Chat Completions chunks into ModelEvents; `finish` is undefined when no finish_reason came (a cut stream). */
export interface OpenAIAssembler {
  push(chunk: ChatCompletionChunk): ModelEvent[];
  finish(): ModelEvent[] | undefined;
}

/**
 * Assembles tool calls from their fragments: `id` and `name` arrive in a
 * call's first fragment, `arguments` in string pieces, all keyed by `index`.
 * Calls are emitted complete when the choice finishes.
 */
export function createOpenAIAssembler(): OpenAIAssembler {
  const calls = new Map<number, PartialCall>();
  let lastIndex = 0;
  let finishReason: string | undefined;
  let usage: ModelUsage = { inputTokens: 0, outputTokens: 0 };
  return {
    push(chunk) {
      if (chunk.usage) usage = { inputTokens: chunk.usage.prompt_tokens ?? 0, outputTokens: chunk.usage.completion_tokens ?? 0 };
      const events: ModelEvent[] = [];
      for (const choice of chunk.choices ?? []) {
        if (choice.index !== 0) continue;
        const content = choice.delta?.content;
        if (typeof content === "string" && content !== "") events.push({ type: "text", delta: content });
        for (const fragment of choice.delta?.tool_calls ?? []) lastIndex = addFragment(calls, fragment, lastIndex);
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
      return events;
    },
    finish() {
      if (finishReason === undefined) return undefined;
      const toolCalls = [...calls.entries()].sort(([a], [b]) => a - b).map(([index, call]) => completeCall(call, index));
      const events: ModelEvent[] = toolCalls.map((call) => ({ type: "tool_call", call }));
      // Some compatible servers (older vLLM, Ollama) say "stop" after tool calls; the calls decide.
      const reason: ModelFinishReason = toolCalls.length > 0 ? "tool_calls" : finishReasonOf(finishReason);
      events.push({ type: "done", finishReason: reason, usage });
      return events;
    },
  };
}

function addFragment(calls: Map<number, PartialCall>, fragment: ChatCompletionChunk.Choice.Delta.ToolCall, last: number): number {
  // Some compatible servers leave out `index` and send each call whole: a fragment with an id starts a new call.
  const index = fragment.index ?? (fragment.id || calls.size === 0 ? calls.size : last);
  let call = calls.get(index);
  if (call === undefined) {
    call = { id: "", name: "", args: "" };
    calls.set(index, call);
  }
  if (fragment.id) call.id = fragment.id;
  if (fragment.function?.name) call.name += fragment.function.name;
  if (fragment.function?.arguments) call.args += fragment.function.arguments;
  return index;
}

function completeCall(call: PartialCall, index: number) {
  // A call with no arguments arrives as ""; a server that sends no id gets a stable one.
  return { id: call.id || `call_${index}`, name: call.name, argumentsJson: call.args === "" ? "{}" : call.args };
}

function finishReasonOf(reason: string): ModelFinishReason {
  if (reason === "stop") return "stop";
  if (reason === "tool_calls" || reason === "function_call") return "tool_calls";
  if (reason === "length") return "length";
  return "other";
}

/** What an OpenAI SDK error means for us. */
export function classifyOpenAIError(err: unknown): ProviderFailure {
  if (err instanceof OpenAI.APIConnectionError) return { kind: "connection", detail: err.message };
  if (err instanceof OpenAI.APIError) {
    if (err.status === undefined) return { kind: "stream-error", detail: err.message };
    return { kind: "status", status: err.status, headers: err.headers, detail: apiMessage(err) };
  }
  if (err instanceof SyntaxError) return { kind: "malformed", detail: "not JSON" };
  return { kind: "connection", detail: err instanceof Error ? err.message : String(err) };
}

/** The provider's own message, without the SDK's "401 " status prefix. */
function apiMessage(err: InstanceType<typeof OpenAI.APIError>): string {
  const body = err.error as { message?: unknown } | undefined;
  return typeof body?.message === "string" ? body.message : "";
}
