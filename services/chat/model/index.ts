/** The model layer's public surface: chat imports only this file. */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ModelSettings } from "./settings.js";
import type { ModelProvider } from "./types.js";

export type * from "./types.js";
export { modelVars, readModelSettings, type ModelSettings } from "./settings.js";

/** The error a chat turn answers when no model is configured: names the variables to set. */
export function modelNotConfigured(): ConnectError {
  return new ConnectError(
    "no language model is configured: set LLM_PROVIDER (openai or anthropic), LLM_API_KEY and LLM_MODEL (and LLM_BASE_URL for a non-default endpoint)",
    Code.FailedPrecondition,
  );
}

/** The provider the settings name, or undefined when LLM_PROVIDER is unset. */
export function createModelProvider(settings: ModelSettings): ModelProvider | undefined {
  if (settings.LLM_PROVIDER === "") return undefined;
  throw new Error("not implemented yet");
}
export { providerSafeToolNames, PROVIDER_SAFE_TOOL_NAME } from "./tool-names.js";
