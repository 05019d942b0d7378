/** The plugins service's own variables. */
import { type ConfigOf, env, int, list, readConfig } from "../../platform/index.js";
import { parseAllowedHost } from "./hosts.js";

/** The plugins service's variables (read at start by `readPluginSettings`). */
export const pluginVars = {
  PLUGINS_ALLOWED_HOSTS: env(
    'hosts whose MCP endpoints plugins may use, comma-separated ("tools.example.com", "127.0.0.1:9000"; a host without a port allows any port); empty = no server-side plugins',
    list(parseAllowedHost),
    () => [],
  ),
  PLUGINS_TOOL_TIMEOUT_MS: env("longest a server-side plugin tool may run when the caller gives no timeout, ms", int(100, 120_000), 30_000),
};

/** The plugins service's parsed variables. */
export type PluginSettings = ConfigOf<typeof pluginVars>;

/** Reads the plugins variables from `source`; throws ConfigError naming each bad one. */
export function readPluginSettings(source: NodeJS.ProcessEnv = process.env): PluginSettings {
  return readConfig(pluginVars, source);
}
