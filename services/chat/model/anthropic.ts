/**
 * The Anthropic adapter: Messages streaming through the official
 * `@anthropic-ai/sdk`, read as raw events so tool calls can be emitted the
 * moment their block closes.
 */
import Anthropic from "@anthropic-ai/sdk";
import type {
  ContentBlockParam,
  MessageParam,
  RawMessageStreamEvent,
  Tool,
} from "@anthropic-ai/sdk/resources/messages/messages";
import type { ProviderFailure } from "./errors.js";
import { providerError } from "./errors.js";
import { guardStream } from "./guard.js";
import { sdkClientOptions, type ProviderOptions } from "./sdk-options.js";
import type { ModelEvent, ModelFinishReason, ModelMessage, ModelProvider, ModelRequest, ModelTool, ModelUsage } from "./types.js";

/** What the adapter needs to know. */
export type AnthropicProviderOptions = ProviderOptions;

/** A ModelProvider over the Messages streaming API. */
export function createAnthropicProvider(options: AnthropicProviderOptions): ModelProvider {
  const client = new Anthropic({
    ...sdkClientOptions(options),
    // null: never fall back to ANTHROPIC_AUTH_TOKEN from the environment; LLM_API_KEY is the one place.
    authToken: null,
  });
  const label = { provider: "anthropic", model: options.model } as const;
  return {
    provider: "anthropic",
    model: options.model,
    stream: (request, signal) => streamEvents(client, options, request, signal, label),
  };
}

async function* streamEvents(
  client: Anthropic,
  options: AnthropicProviderOptions,
  request: ModelRequest,
  signal: AbortSignal,
  label: { provider: "anthropic"; model: string },
): AsyncGenerator<ModelEvent> {
  const events = guardStream(
    (inner) =>
      client.messages.create(
        {
          model: options.model,
          max_tokens: request.maxOutputTokens,
          ...(request.system !== "" ? { system: request.system } : {}),
          messages: toAnthropicMessages(request.messages),
          ...(request.tools.length > 0 ? { tools: request.tools.map(toAnthropicTool) } : {}),
          stream: true,
        },
        { signal: inner },
      ),
    { signal, stallMs: options.stallMs, label, classify: classifyAnthropicError },
  );
  const assembler = createAnthropicAssembler();
  for await (const event of events) {
    yield* assembler.push(event);
    if (assembler.finished) return;
  }
  throw providerError({ kind: "truncated" }, label);
}

/**
 * The conversation as Messages turns. Tool results travel in a user turn, all
 * results of one assistant turn together; consecutive user-side messages are
 * merged so the turns alternate as the API expects.
 */
export function toAnthropicMessages(messages: readonly ModelMessage[]): MessageParam[] {
  const out: MessageParam[] = [];
  for (const message of messages) {
    const role = message.role === "assistant" ? "assistant" : "user";
    const blocks = toBlocks(message);
    if (blocks.length === 0) continue; // the API refuses empty content
    const last = out.at(-1);
    if (last !== undefined && last.role === role) (last.content as ContentBlockParam[]).push(...blocks);
    else out.push({ role, content: blocks });
  }
  return out;
}

function toBlocks(message: ModelMessage): ContentBlockParam[] {
  switch (message.role) {
    case "user":
      return message.text === "" ? [] : [{ type: "text", text: message.text }];
    case "assistant":
      return [
        ...(message.text === "" ? [] : [{ type: "text" as const, text: message.text }]),
        ...message.toolCalls.map((call) => ({ type: "tool_use" as const, id: call.id, name: call.name, input: inputOf(call.argumentsJson) })),
      ];
    case "tool":
      return [{ type: "tool_result", tool_use_id: message.toolCallId, content: message.content, is_error: message.isError }];
  }
}

/** A tool_use block's input must be an object; arguments the model got wrong (already answered by a tool error) become {}. */
function inputOf(argumentsJson: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(argumentsJson);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function toAnthropicTool(tool: ModelTool): Tool {
  return { name: tool.name, description: tool.description, input_schema: { type: "object", ...tool.inputSchema } };
}

/** Turns raw Messages stream events into ModelEvents; `finished` once message_stop arrived. */
export interface AnthropicAssembler {
  push(event: RawMessageStreamEvent): ModelEvent[];
  readonly finished: boolean;
}

/**
 * Text deltas pass straight through; a tool_use block's input_json_delta
 * pieces are joined and the call is emitted when its block stops; usage is
 * the start's input tokens plus message_delta's cumulative counts.
 */
export function createAnthropicAssembler(): AnthropicAssembler {
  const tools = new Map<number, { id: string; name: string; json: string }>();
  let stopReason: string | null = null;
  let inputTokens = 0;
  let outputTokens = 0;
  let finished = false;
  const push = (event: RawMessageStreamEvent): ModelEvent[] => {
    switch (event.type) {
      case "message_start": {
        const usage = event.message.usage;
        inputTokens = totalInput(usage);
        outputTokens = usage.output_tokens ?? 0;
        return [];
      }
      case "content_block_start": {
        const block = event.content_block;
        if (block.type === "tool_use") tools.set(event.index, { id: block.id, name: block.name, json: "" });
        if (block.type === "text" && block.text !== "") return [{ type: "text", delta: block.text }];
        return [];
      }
      case "content_block_delta": {
        const delta = event.delta;
        if (delta.type === "text_delta" && delta.text !== "") return [{ type: "text", delta: delta.text }];
        if (delta.type === "input_json_delta") {
          const tool = tools.get(event.index);
          if (tool !== undefined) tool.json += delta.partial_json;
        }
        return [];
      }
      case "content_block_stop": {
        const tool = tools.get(event.index);
        if (tool === undefined) return [];
        tools.delete(event.index);
        return [{ type: "tool_call", call: { id: tool.id, name: tool.name, argumentsJson: tool.json === "" ? "{}" : tool.json } }];
      }
      case "message_delta": {
        stopReason = event.delta.stop_reason ?? stopReason;
        const usage = event.usage;
        if (usage.input_tokens != null) inputTokens = totalInput(usage);
        if (usage.output_tokens != null) outputTokens = usage.output_tokens;
        return [];
      }
      case "message_stop": {
        finished = true;
        const usage: ModelUsage = { inputTokens, outputTokens };
        return [{ type: "done", finishReason: finishReasonOf(stopReason), usage }];
      }
      default:
        return [];
    }
  };
  return {
    push,
    get finished() {
      return finished;
    },
  };
}

/** Input tokens including those written to and read from the prompt cache: all of them were sent. */
function totalInput(usage: { input_tokens: number | null; cache_creation_input_tokens?: number | null; cache_read_input_tokens?: number | null }): number {
  return (usage.input_tokens ?? 0) + (usage.cache_creation_input_tokens ?? 0) + (usage.cache_read_input_tokens ?? 0);
}

function finishReasonOf(reason: string | null): ModelFinishReason {
  if (reason === "end_turn" || reason === "stop_sequence") return "stop";
  if (reason === "tool_use") return "tool_calls";
  if (reason === "max_tokens") return "length";
  return "other";
}

/** What an Anthropic SDK error means for us. */
export function classifyAnthropicError(err: unknown): ProviderFailure {
  if (err instanceof Anthropic.APIConnectionError) return { kind: "connection", detail: err.message };
  if (err instanceof Anthropic.APIError) {
    if (err.status === undefined) return { kind: "stream-error", detail: apiMessage(err) || err.message };
    return { kind: "status", status: err.status, headers: err.headers, detail: apiMessage(err) };
  }
  if (err instanceof SyntaxError) return { kind: "malformed", detail: "not JSON" };
  return { kind: "connection", detail: err instanceof Error ? err.message : String(err) };
}

/** The provider's own message from its error body `{type:"error", error:{type, message}}`. */
function apiMessage(err: InstanceType<typeof Anthropic.APIError>): string {
  const body = err.error as { error?: { message?: unknown } } | undefined;
  return typeof body?.error?.message === "string" ? body.error.message : "";
}
