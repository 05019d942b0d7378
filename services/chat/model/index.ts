/**
 * The model layer's public surface: chat imports only this file.
 *
 *   const provider = createModelProvider(readModelSettings());   // at start; undefined = unconfigured
 *   if (provider === undefined) throw modelNotConfigured();      // per turn: FAILED_PRECONDITION naming LLM_*
 *   const names = providerSafeToolNames(tools.map((t) => t.name)); // "filesystem.read_file" → "filesystem_read_file_1a2b3c4d"
 *   for await (const event of provider.stream(request, signal)) { ... }  // text…, tool_call…, then one done
 *
 * A stream either ends with exactly one `done` or throws a ConnectError:
 * FAILED_PRECONDITION (the provider refuses our key, 401/403, or does not know
 * LLM_MODEL, 404), RESOURCE_EXHAUSTED with RetryInfo (429), INVALID_ARGUMENT
 * (the provider refuses the request as given: 400/413/422, e.g. a conversation
 * over the context window), UNAVAILABLE (5xx, no connection, a stall longer
 * than LLM_STALL_TIMEOUT_MS, a malformed chunk, a stream cut before its end),
 * or CANCELED / the signal's own ConnectError reason when the caller aborts.
 * Text already yielded before an error is partial: a caller re-runs the call
 * whole. Neither SDK retries (maxRetries 0): retrying is the caller's decision.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { createAnthropicProvider } from "./anthropic.js";
import { createOpenAIProvider } from "./openai.js";
import type { ModelSettings } from "./settings.js";
import type { ModelProvider } from "./types.js";

export type * from "./types.js";
export { modelVars, readModelSettings, type ModelSettings, type ProviderName } from "./settings.js";
export { providerSafeToolNames, PROVIDER_SAFE_TOOL_NAME } from "./tool-names.js";
export { createOpenAIProvider, type OpenAIProviderOptions } from "./openai.js";
export { createAnthropicProvider, type AnthropicProviderOptions } from "./anthropic.js";

/** The error a chat turn answers when no model is configured: names the variables to set. */
export function modelNotConfigured(): ConnectError {
  return new ConnectError(
    "no language model is configured: the operator must set LLM_PROVIDER (openai or anthropic), LLM_API_KEY and LLM_MODEL " +
      "(and LLM_BASE_URL for a server other than the provider's own)",
    Code.FailedPrecondition,
  );
}

/** The provider the settings name (through its official SDK), or undefined when LLM_PROVIDER is unset. */
export function createModelProvider(settings: ModelSettings): ModelProvider | undefined {
  const options = {
    baseURL: settings.LLM_BASE_URL === "" ? undefined : settings.LLM_BASE_URL,
    apiKey: settings.LLM_API_KEY,
    model: settings.LLM_MODEL,
    stallMs: settings.LLM_STALL_TIMEOUT_MS,
  };
  switch (settings.LLM_PROVIDER) {
    case "":
      return undefined;
    case "openai":
      return createOpenAIProvider(options);
    case "anthropic":
      return createAnthropicProvider(options);
  }
}
