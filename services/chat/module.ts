/**
 * The chat service: chat turns run as durable state machines in PostgreSQL
 * (any chat instance takes over a turn whose instance stopped), the agent
 * catalogue and agent runs. Tools are those of the user's devices, reached
 * through the gateway's DeviceService with chat's service token.
 */
import { AgentService } from "../../gen/switchyard/chat/v1/agent_pb.js";
import { ChatService } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { DeviceService } from "../../gen/switchyard/device/v1/device_pb.js";
import { PluginService } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { createServiceClient, createServiceTransport, type ServiceModule } from "../../platform/index.js";
import { createAgentHandlers, recordRunEnd } from "./agent-service.js";
import { createChatHandlers } from "./chat-service.js";
import { createDeviceToolSource } from "./device-tools.js";
import { deviceChangeEvents, pluginChangeEvents, watchUserEvents } from "./user-events.js";
import { createPluginToolSource } from "./plugin-tools.js";
import { startLeases } from "./leases.js";
import { createChatMetrics } from "./metrics.js";
import { createModelProvider, modelVars, readModelSettings } from "./model/index.js";
import { chatVars, readChatSettings } from "./settings.js";
import { combineToolSources } from "./tools.js";
import { createTurnHub } from "./turn-hub.js";
import { createTurnLog } from "./turn-log.js";
import { createTurnRunner } from "./turn-runner.js";

/** The chat module, reading its variables (settings.ts, model/settings.ts) from `source` at start. */
export function createChatModule(source: NodeJS.ProcessEnv = process.env): ServiceModule {
  return {
    name: "chat",
    settings: { ...chatVars, ...modelVars },
    summary: "durable chat turns (any instance takes over a turn whose instance stopped), device tools via DeviceService, approvals, the agent catalogue and agent runs",
    serves: [ChatService, AgentService],
    replicas: 2,
    calls: ["gateway", "plugins"],
    migrations: new URL("./migrations/", import.meta.url),
    uses: ["db", "nats", "events"],
    start(ctx) {
      const settings = readChatSettings(source);
      const model = createModelProvider(readModelSettings(source));
      const gatewayUrl = ctx.serviceUrl("gateway");
      const devices = createServiceClient(DeviceService, createServiceTransport(gatewayUrl, [ctx.auth.serviceTokens("chat").interceptor]));
      const pluginsUrl = ctx.serviceUrl("plugins");
      const pluginClient = createServiceClient(PluginService, createServiceTransport(pluginsUrl, [ctx.auth.serviceTokens("chat").interceptor]));
      const deviceTools = createDeviceToolSource(devices, { cacheTtlMs: settings.CHAT_DEVICE_TOOLS_CACHE_MS });
      const pluginTools = createPluginToolSource({ plugins: pluginClient, devices: deviceTools, cacheTtlMs: settings.CHAT_PLUGIN_TOOLS_CACHE_MS });
      const stopWatches = [
        watchUserEvents(ctx.nats, deviceChangeEvents, deviceTools.invalidate, ctx.log),
        watchUserEvents(ctx.nats, pluginChangeEvents, pluginTools.invalidate, ctx.log),
      ];
      const tools = combineToolSources({ device: deviceTools, plugin: pluginTools });
      const metrics = createChatMetrics(ctx.metrics.registry);
      const hub = createTurnHub();
      const turnLog = createTurnLog(ctx.db, ctx.instanceId, hub, ctx.nats);
      const runner = createTurnRunner({
        db: ctx.db,
        log: ctx.log,
        turnLog,
        hub,
        tools,
        model,
        settings,
        metrics,
        nats: ctx.nats,
        onEnd: (tx, turn, end, finalText) => recordRunEnd(tx, ctx.events, turn, end, finalText),
      });
      const stopLeases = startLeases({ db: ctx.db, owner: ctx.instanceId, runner, leaseMs: settings.CHAT_TURN_LEASE_MS, log: ctx.log, metrics });
      const common = { db: ctx.db, hub, nats: ctx.nats, runner, tools, model, settings, instanceId: ctx.instanceId, shutdownSignal: ctx.shutdownSignal };
      return {
        services: [createChatHandlers(common), createAgentHandlers({ ...common, events: ctx.events })],
        async stop() {
          for (const stop of stopWatches) await stop();
          await stopLeases();
        },
      };
    },
  };
}

/** The chat module as `npm start` runs it, configured from the environment. */
export const chat: ServiceModule = createChatModule();
