/**
 * The plugins service: the marketplace, installations with their revenue
 * split, and the server-side plugin tools the assistant calls over MCP.
 */
import { PluginService } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import type { ServiceModule } from "../../platform/index.js";
import { createPluginHandlers } from "./handlers.js";
import { createMcpClients } from "./mcp.js";
import { pluginVars, readPluginSettings } from "./settings.js";
import { consumeTierChanges } from "./tier-consumer.js";

/** The plugins module, reading its variables from `source` at start. */
export function createPluginsModule(source: NodeJS.ProcessEnv = process.env): ServiceModule {
  return {
    name: "plugins",
    settings: pluginVars,
    summary: "the plugin marketplace, installations (tier-checked, idempotent, with a revenue split), and plugin tools for the assistant: on the device or over MCP (Streamable HTTP) at hosts in `PLUGINS_ALLOWED_HOSTS`",
    serves: [PluginService],
    migrations: new URL("./migrations/", import.meta.url),
    uses: ["db", "events"],
    async start(ctx) {
      const settings = readPluginSettings(source);
      const mcp = createMcpClients(ctx.log);
      const stopConsumer = await consumeTierChanges(ctx.events, ctx.log);
      return {
        services: [
          createPluginHandlers({ db: ctx.db, events: ctx.events, mcp, allowedHosts: settings.PLUGINS_ALLOWED_HOSTS, defaultToolTimeoutMs: settings.PLUGINS_TOOL_TIMEOUT_MS }),
        ],
        async stop() {
          await stopConsumer();
          await mcp.close();
        },
      };
    },
  };
}

/** The plugins module as `npm start` runs it. */
export const plugins: ServiceModule = createPluginsModule();
