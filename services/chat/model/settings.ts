/** The model layer's variables: which provider chat talks to, where, with which key. */
import { type ConfigOf, env, int, oneOf, readConfig, url } from "../../../platform/index.js";

/** The model variables; unset LLM_PROVIDER means chat has no model (turns answer FAILED_PRECONDITION). */
export const modelVars = {
  LLM_PROVIDER: env("language-model provider: openai or anthropic; unset = chat turns answer FAILED_PRECONDITION", oneOf("openai", "anthropic", ""), ""),
  LLM_BASE_URL: env(
    "provider API base URL, e.g. https://api.openai.com/v1 or https://api.anthropic.com; unset = the SDK's default",
    (raw) => (url("http", "https")(raw), raw),
    "",
  ),
  LLM_API_KEY: env("provider API key (required with LLM_PROVIDER)", (raw) => raw, "", true),
  LLM_MODEL: env("model name, e.g. gpt-4o-mini or claude-sonnet-4-5 (required with LLM_PROVIDER)", (raw) => raw, ""),
  LLM_STALL_TIMEOUT_MS: env("a model stream with no chunk for this long fails UNAVAILABLE, ms", int(100, 10 * 60_000), 30_000),
};

/** The parsed model variables. */
export type ModelSettings = ConfigOf<typeof modelVars>;

/** Reads the model variables from `source`; throws ConfigError naming each bad one. */
export function readModelSettings(source: NodeJS.ProcessEnv = process.env): ModelSettings {
  return readConfig(modelVars, source);
}
