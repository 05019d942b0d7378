/**
 * The model layer's contract: what chat sends a language model and what it
 * streams back, independent of the provider's wire format (OpenAI Chat
 * Completions or Anthropic Messages). Adapters in this folder translate.
 */

/** A tool the model may call; `name` must already be provider-safe (see `providerSafeToolNames`). */
export interface ModelTool {
  /** Provider-safe: ^[a-zA-Z0-9_-]{1,64}$. */
  readonly name: string;
  readonly description: string;
  /** JSON Schema of the tool's arguments (an object schema). */
  readonly inputSchema: Record<string, unknown>;
}

/** One complete tool call the model made: its arguments are the assembled JSON text. */
export interface ModelToolCall {
  readonly id: string;
  readonly name: string;
  readonly argumentsJson: string;
}

/** One message of the conversation sent to the model. */
export type ModelMessage =
  | { readonly role: "user"; readonly text: string }
  | { readonly role: "assistant"; readonly text: string; readonly toolCalls: readonly ModelToolCall[] }
  | { readonly role: "tool"; readonly toolCallId: string; readonly name: string; readonly content: string; readonly isError: boolean };

/** One model call: the system prompt, the conversation so far and the tools offered. */
export interface ModelRequest {
  readonly system: string;
  readonly messages: readonly ModelMessage[];
  readonly tools: readonly ModelTool[];
  readonly maxOutputTokens: number;
}

/** Tokens the provider counted for one call. */
export interface ModelUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
}

/** Why the model stopped. */
export type ModelFinishReason = "stop" | "tool_calls" | "length" | "other";

/** What a model call streams: text deltas, complete tool calls, then exactly one `done`. */
export type ModelEvent =
  | { readonly type: "text"; readonly delta: string }
  /** Complete: arguments assembled from the provider's fragments. */
  | { readonly type: "tool_call"; readonly call: ModelToolCall }
  | { readonly type: "done"; readonly finishReason: ModelFinishReason; readonly usage: ModelUsage };

/**
 * Streams one model call. Errors are ConnectErrors with mapped codes:
 * provider 401/403 → FAILED_PRECONDITION (our misconfiguration, never UNAUTHENTICATED);
 * 429 → RESOURCE_EXHAUSTED with google.rpc.RetryInfo; 5xx, connection errors,
 * stalls and malformed chunks → UNAVAILABLE; an aborted `signal` → CANCELED.
 */
export interface ModelProvider {
  readonly provider: "openai" | "anthropic";
  readonly model: string;
  stream(request: ModelRequest, signal: AbortSignal): AsyncIterable<ModelEvent>;
}
