/** The model layer's variables: which provider chat talks to, where, with which key. */
import { ConfigError, type ConfigOf, env, type EnvParser, int, oneOf, readConfig, url } from "../../../platform/index.js";

/** The providers the model layer speaks; "" = none configured. */
export type ProviderName = "openai" | "anthropic";

/** The model variables; unset LLM_PROVIDER means chat has no model (turns answer FAILED_PRECONDITION). */
export const modelVars = {
  LLM_PROVIDER: env(
    "language-model provider: openai (also any OpenAI-compatible server: vLLM, llama.cpp, Ollama's /v1) or anthropic; unset = chat turns answer FAILED_PRECONDITION",
    oneOf("openai", "anthropic") as EnvParser<ProviderName | "">,
    "",
  ),
  LLM_BASE_URL: env(
    "provider API base URL, e.g. https://api.openai.com/v1, http://127.0.0.1:11434/v1 (Ollama) or https://api.anthropic.com; unset = the SDK's default",
    url("http", "https"),
    "",
  ),
  LLM_API_KEY: env("provider API key (required with LLM_PROVIDER; any non-empty value for a local server that checks none)", (raw) => raw, "", true),
  LLM_MODEL: env("model name, e.g. gpt-4o-mini or claude-sonnet-4-5 (required with LLM_PROVIDER)", (raw) => raw, ""),
  LLM_STALL_TIMEOUT_MS: env("a model call with no response or no stream chunk for this long fails UNAVAILABLE, ms", int(100, 10 * 60_000), 30_000),
};

/** The parsed model variables. */
export type ModelSettings = ConfigOf<typeof modelVars>;

/**
 * Reads the model variables from `source`; throws ConfigError naming each bad
 * one, including LLM_API_KEY and LLM_MODEL when LLM_PROVIDER is set without them.
 */
export function readModelSettings(source: NodeJS.ProcessEnv = process.env): ModelSettings {
  const settings = readConfig(modelVars, source);
  if (settings.LLM_PROVIDER === "") return settings;
  const problems: string[] = [];
  if (settings.LLM_API_KEY === "") problems.push(`LLM_API_KEY is required with LLM_PROVIDER=${settings.LLM_PROVIDER}: ${modelVars.LLM_API_KEY.doc}`);
  if (settings.LLM_MODEL === "") problems.push(`LLM_MODEL is required with LLM_PROVIDER=${settings.LLM_PROVIDER}: ${modelVars.LLM_MODEL.doc}`);
  if (problems.length > 0) throw new ConfigError(problems);
  return settings;
}
