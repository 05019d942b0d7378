/**
 * The tools of a user's installed plugins, through the plugins service's
 * generated PluginService client only (with chat's service token):
 * ListInstalledTools for what the user's active installations add, and
 * CallPluginTool to run a server-side tool over MCP with the call id (the
 * plugins service answers a repeated call id with the first outcome).
 * A tool a plugin runs on the user's device goes through the device source's
 * `call` (DeviceService.CallTool), exactly like the device's own tools; the
 * gateway runs it only on a connected device that declares it, so it is
 * offered only while the device source lists a tool of that name.
 *
 * Listings are cached per user (listing-cache.ts); PluginInstalled and
 * PluginUninstalled invalidate a user's entry (user-events.ts), and the TTL
 * bounds what a missed event or a tier suspension can leave stale. A stale
 * entry is harmless for safety: CallPluginTool checks the installation again.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import {
  type CallPluginToolResponse,
  CallPluginToolRequestSchema,
  type InstalledTool,
  PluginService,
  ToolRuntime,
} from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { rulesOf } from "../../platform/index.js";
import { createListingCache, failureTtlOfRpcError } from "./listing-cache.js";
import type { AgentTool, ToolOutcome, ToolSource } from "./tools.js";

/** The prefix of a plugin tool's origin: "plugin:<plugin id>". */
export const PLUGIN_ORIGIN_PREFIX = "plugin:";

/** The longest timeout CallPluginTool accepts, read from the contract's rule. */
const maxCallTimeoutMs = rulesOf(CallPluginToolRequestSchema.field.timeoutMs)?.max ?? 120_000;

/** The RPCs of PluginService this source uses (a client carrying chat's service token). */
export type PluginToolsClient = Pick<Client<typeof PluginService>, "listInstalledTools" | "callPluginTool">;

/** What the plugin tool source needs. */
export interface PluginToolSourceOptions {
  readonly plugins: PluginToolsClient;
  /** Lists and runs device-runtime plugin tools (the device source); without it they are not offered. */
  readonly devices?: ToolSource;
  /** How long a user's listing is reused, ms (default 15000; 0 = never cached). */
  readonly cacheTtlMs?: number;
  /** Most users whose listing is kept (default 10000; the oldest entry goes first). */
  readonly maxCachedUsers?: number;
  /** The clock, for tests. */
  readonly now?: () => number;
}

/** A plugin tool source whose per-user listing can be dropped when the user's plugins change. */
export interface PluginToolSource extends ToolSource {
  /** Forgets `userId`'s cached listing: the next `list` asks the plugins service. */
  invalidate(userId: string): void;
}

/** A listed tool with what `call` needs to route it. */
interface ListedTool {
  readonly tool: AgentTool;
  readonly pluginId: string;
  readonly runtime: ToolRuntime;
}

/** Longest a listing may take before the turn goes on without plugin tools. */
const listTimeoutMs = 10_000;

/** The plugin id an origin names, or undefined when it is not a plugin's. */
export function pluginIdOf(origin: string): string | undefined {
  return origin.startsWith(PLUGIN_ORIGIN_PREFIX) ? origin.slice(PLUGIN_ORIGIN_PREFIX.length) : undefined;
}

/** An installed tool as the model is offered it. */
export function toAgentTool(installed: InstalledTool): AgentTool {
  const t = installed.tool!;
  return {
    name: t.name,
    description: t.description,
    inputSchema: t.inputSchema !== undefined && Object.keys(t.inputSchema).length > 0 ? t.inputSchema : { type: "object" },
    annotations: { readOnlyHint: t.annotations?.readOnlyHint, destructiveHint: t.annotations?.destructiveHint },
    origin: `${PLUGIN_ORIGIN_PREFIX}${installed.pluginId}`,
  };
}

/**
 * The listed tools of a ListInstalledTools answer: device-runtime ones only
 * when `withDeviceTools`; where two plugins name the same tool, the first
 * (by plugin id, the service's order) wins, since the model calls by name.
 */
export function listedTools(installed: readonly InstalledTool[], withDeviceTools: boolean): ListedTool[] {
  const seen = new Set<string>();
  const out: ListedTool[] = [];
  for (const it of installed) {
    const t = it.tool;
    if (t === undefined || seen.has(t.name)) continue;
    if (t.runtime === ToolRuntime.DEVICE && !withDeviceTools) continue;
    if (t.runtime !== ToolRuntime.DEVICE && t.runtime !== ToolRuntime.SERVER) continue;
    seen.add(t.name);
    out.push({ tool: toAgentTool(it), pluginId: it.pluginId, runtime: t.runtime });
  }
  return out;
}

/**
 * A CallPluginTool answer as the model reads it: `content` is the tool's
 * text (what MCP gives the model); `result`, what the chat stream shows, is
 * the tool's structuredContent, or `{content: text}` when it gave none.
 */
export function outcomeOfPluginResponse(res: CallPluginToolResponse): ToolOutcome {
  if (res.isError) return { ok: false, code: ToolErrorCode.FAILED, error: res.content || "the plugin's tool failed without saying why" };
  return { ok: true, content: res.content, result: structuredResult(res.structuredJson) ?? { content: res.content } };
}

function structuredResult(json: string): JsonObject | undefined {
  if (json === "") return undefined;
  try {
    const v: unknown = JSON.parse(json);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as JsonObject) : undefined;
  } catch {
    return undefined;
  }
}

/** What the model is told when CallPluginTool produced no outcome. */
export function outcomeOfPluginRpcError(e: ConnectError): ToolOutcome {
  switch (e.code) {
    case Code.NotFound:
      return { ok: false, code: ToolErrorCode.UNKNOWN_TOOL, error: `the plugin is no longer installed or active for this user: ${e.rawMessage}` };
    case Code.InvalidArgument:
      return { ok: false, code: ToolErrorCode.INVALID_ARGUMENTS, error: `the call was refused: ${e.rawMessage}` };
    case Code.DeadlineExceeded:
      return { ok: false, code: ToolErrorCode.DEADLINE_EXCEEDED, error: `the tool did not answer in time: ${e.rawMessage}` };
    case Code.Canceled:
      return { ok: false, code: ToolErrorCode.CANCELLED, error: "the call was cancelled" };
    default:
      return { ok: false, code: ToolErrorCode.UNAVAILABLE, error: `the plugin service failed (${Code[e.code]}): ${e.rawMessage}` };
  }
}

/** The plugin tool source. */
export function createPluginToolSource(options: PluginToolSourceOptions): PluginToolSource {
  const { plugins, devices } = options;
  // Not bound to one caller's signal: other turns may wait on the same fetch.
  const fetchListing = (userId: string): Promise<ListedTool[]> =>
    plugins.listInstalledTools({ userId }, { timeoutMs: listTimeoutMs }).then((res) => listedTools(res.tools, devices !== undefined));
  const ttlMs = options.cacheTtlMs ?? 15_000;
  const cache = createListingCache(fetchListing, { ttlMs, failureTtlMs: failureTtlOfRpcError(ttlMs), maxUsers: options.maxCachedUsers, now: options.now });
  const listing = cache.get;
  /** What the user's connected devices declare now (none when the device source fails: their tools could not run either). */
  const deviceToolNames = async (userId: string, signal: AbortSignal): Promise<ReadonlySet<string>> => {
    if (devices === undefined) return new Set();
    const tools = await devices.list(userId, signal).catch((err: unknown) => {
      if (signal.aborted) throw err;
      return [];
    });
    return new Set(tools.map((t) => t.name));
  };

  async function callServerTool(userId: string, pluginId: string, tool: AgentTool, callId: string, argumentsJson: string, timeoutMs: number, signal: AbortSignal): Promise<ToolOutcome> {
    const bounded = Math.max(1, Math.min(timeoutMs, maxCallTimeoutMs));
    try {
      const res = await plugins.callPluginTool(
        { userId, pluginId, toolName: tool.name, callId, argumentsJson: argumentsJson || "{}", timeoutMs: bounded },
        // The service answers a timed-out tool itself; the margin is for that answer to arrive.
        { signal, timeoutMs: bounded + 2000 },
      );
      return outcomeOfPluginResponse(res);
    } catch (err) {
      if (signal.aborted) throw err;
      const e = ConnectError.from(err);
      if (e.code === Code.NotFound) cache.invalidate(userId);
      return outcomeOfPluginRpcError(e);
    }
  }

  return {
    async list(userId, signal) {
      const [listed, onDevices] = await Promise.all([listing(userId, signal), deviceToolNames(userId, signal)]);
      return listed.filter((l) => l.runtime !== ToolRuntime.DEVICE || onDevices.has(l.tool.name)).map((l) => l.tool);
    },

    async call(userId, tool, callId, argumentsJson, timeoutMs, signal) {
      const pluginId = pluginIdOf(tool.origin);
      if (pluginId === undefined) return { ok: false, error: `"${tool.name}" is not a plugin's tool (origin "${tool.origin}")` };
      let listed: ListedTool | undefined;
      try {
        listed = (await listing(userId, signal)).find((l) => l.pluginId === pluginId && l.tool.name === tool.name);
      } catch (err) {
        if (signal.aborted) throw err;
        return outcomeOfPluginRpcError(ConnectError.from(err));
      }
      if (listed === undefined) return { ok: false, code: ToolErrorCode.UNKNOWN_TOOL, error: `the plugin "${pluginId}" is no longer installed or active, or has no tool "${tool.name}"` };
      if (listed.runtime === ToolRuntime.DEVICE) {
        // Listed only when a device source exists; it runs the tool like the device's own.
        return devices!.call(userId, { ...tool, origin: "device" }, callId, argumentsJson, timeoutMs, signal);
      }
      return callServerTool(userId, pluginId, tool, callId, argumentsJson, timeoutMs, signal);
    },

    invalidate: cache.invalidate,
  };
}
