/** The model layer's public surface: chat imports only this file. */
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
