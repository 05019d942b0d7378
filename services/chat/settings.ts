/** The chat service's own variables (the model's are in model/settings.ts). */
import { type ConfigOf, env, int, readConfig } from "../../platform/index.js";

/** The chat service's variables, read at start by `readChatSettings`. */
export const chatVars = {
  CHAT_DEVICE_TOOLS_CACHE_MS: env(
    "how long chat reuses a user's list of device tools (a device connecting or leaving refreshes it at once; the TTL bounds staleness after a missed event or a gateway crash), ms; 0 = ask every turn",
    int(0, 600_000),
    15_000,
  ),
  CHAT_PLUGIN_TOOLS_CACHE_MS: env("how long chat reuses a user's list of installed plugin tools (installs and uninstalls refresh it at once), ms; 0 = ask every turn", int(0, 600_000), 15_000),
  CHAT_TURN_LEASE_MS: env(
    "how long a chat instance holds a running turn without renewing it; another instance takes the turn over once it runs out",
    int(500, 60_000),
    10_000,
  ),
  CHAT_TURN_DEADLINE_MS: env("longest a turn may run, approvals included; past it the turn fails DEADLINE_EXCEEDED", int(1000, 24 * 3600_000), 10 * 60_000),
  CHAT_MODEL_DEADLINE_MS: env("longest one model call may stream before it fails UNAVAILABLE", int(500, 30 * 60_000), 120_000),
  CHAT_TOOL_TIMEOUT_MS: env("how long one device tool call may take (CallTool's timeout), ms", int(100, 300_000), 30_000),
  CHAT_MAX_OUTPUT_TOKENS: env("most output tokens one model call may produce (also bounded by what the tier's per-turn budget has left)", int(16, 1_000_000), 4096),
};

/** The parsed chat variables. */
export type ChatSettings = ConfigOf<typeof chatVars>;

/** Reads the chat variables from `source`; throws ConfigError naming each bad one. */
export function readChatSettings(source: NodeJS.ProcessEnv = process.env): ChatSettings {
  return readConfig(chatVars, source);
}
