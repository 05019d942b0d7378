/**
 * The PluginService RPCs. Input rules (ids, lengths, patterns) come from the
 * contract and are checked by the platform before a handler runs; what is
 * checked here is what needs the database or the caller.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { PluginInstalledSchema, PluginUninstalledSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import {
  type CallPluginToolResponse,
  CallPluginToolResponseSchema,
  InstallationSchema,
  PluginService,
  type PluginTool,
  ToolRuntime,
  type UpsertPluginRequest,
} from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { type Database, type Events, type Principal, principalKey, register, SERVICE_ROLE, type ServiceRegistration, type TransactionSql } from "../../platform/index.js";
import { findInstallation, findPlugin, installedTools, listPlugins, lockUser, toolsJson, toPlugin, upsertPlugin, type PluginRow } from "./catalog.js";
import { type AllowedHost, endpointRefusal } from "./hosts.js";
import type { McpClients } from "./mcp.js";
import { decodePageToken, encodePageToken, queryFingerprint } from "./page-token.js";
import { splitRevenue } from "./revenue.js";

/** Most plugins a user of each tier may have installed. */
export const MAX_INSTALLS: Readonly<Record<Tier, number>> = { [Tier.UNSPECIFIED]: 0, [Tier.FREE]: 5, [Tier.PRO]: 20, [Tier.POWER]: 50, [Tier.TEAM]: 100 };

/** What the handlers need. */
export interface PluginHandlerDeps {
  readonly db: Database;
  readonly events: Events;
  readonly mcp: McpClients;
  readonly allowedHosts: readonly AllowedHost[];
  readonly defaultToolTimeoutMs: number;
}

const tierName = (t: Tier) => Tier[t]?.toLowerCase() ?? String(t);

function caller(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (p === undefined) throw new ConnectError("this RPC needs an access token", Code.Unauthenticated);
  return p;
}

/** The calling user; PERMISSION_DENIED for a service, which has no installations of its own. */
function callingUser(ctx: HandlerContext): Principal {
  const p = caller(ctx);
  if (p.roles.includes(SERVICE_ROLE)) throw new ConnectError("a service has no installations: call this as a user", Code.PermissionDenied);
  return p;
}

/** The tier that decides installs: the latest TierChanged billing sent, else the token's. */
async function effectiveTier(tx: TransactionSql, user: Principal): Promise<Tier> {
  const [row] = await tx<{ tier: number }[]>`select tier from plugins.user_tiers where user_id = ${user.userId}`;
  return (row?.tier as Tier | undefined) ?? user.tier;
}

/** Why a listing may not be stored, or undefined. */
export function upsertRefusal(req: UpsertPluginRequest, allowedHosts: readonly AllowedHost[]): string | undefined {
  const names = new Set<string>();
  for (const t of req.tools) {
    if (names.has(t.name)) return `tools: "${t.name}" is listed twice`;
    names.add(t.name);
    if (t.runtime === ToolRuntime.UNSPECIFIED) return `tools: "${t.name}" needs a runtime (TOOL_RUNTIME_DEVICE or TOOL_RUNTIME_SERVER)`;
    const type = t.inputSchema?.type;
    if (type !== undefined && type !== "object") return `tools: the input_schema of "${t.name}" must describe an object`;
  }
  if (req.priceMinorUnits > 0n && req.currencyCode === "") return "currency_code: required when price_minor_units is above 0";
  const serverTools = req.tools.some((t) => t.runtime === ToolRuntime.SERVER);
  if (serverTools && req.mcpEndpoint === "") return "mcp_endpoint: required when a tool runs on the server";
  if (req.mcpEndpoint !== "") return endpointRefusal(req.mcpEndpoint, allowedHosts);
  return undefined;
}

/** Time after a call's timeout for its outcome to be written, before a repeat calls it unknown. */
const outcomeWriteMarginMs = 2000;
/** How often a repeated call id looks for the first call's outcome. */
const repeatPollMs = 25;

/** Creates the PluginService registration. */
export function createPluginHandlers(deps: PluginHandlerDeps): ServiceRegistration {
  const { db, events, mcp } = deps;

  async function install(tx: TransactionSql, user: Principal, pluginId: string, idempotencyKey: string) {
    await lockUser(tx, user.userId);
    if (idempotencyKey !== "") {
      const [prior] = await tx<{ plugin_id: string }[]>`
        select plugin_id from plugins.install_requests
        where user_id = ${user.userId} and idempotency_key = ${idempotencyKey} and created_at > now() - interval '24 hours'`;
      if (prior !== undefined && prior.plugin_id !== pluginId) throw new ConnectError("idempotency_key: it was used for another plugin", Code.AlreadyExists);
      const existing = prior && (await findInstallation(tx, user.userId, pluginId));
      if (existing) return existing;
      // The key's install happened (and was paid for); a late retry of it must not install and charge again.
      if (prior !== undefined) throw new ConnectError("idempotency_key: its installation has been uninstalled since; install again with a new key", Code.AlreadyExists);
    }
    const plugin = await findPlugin(tx, pluginId);
    if (plugin === undefined) throw new ConnectError(`no plugin "${pluginId}" in the marketplace`, Code.NotFound);
    const tier = await effectiveTier(tx, user);
    if (plugin.min_tier > tier) {
      throw new ConnectError(`${plugin.display_name} needs the ${tierName(plugin.min_tier)} tier or higher; you are on ${tierName(tier)}: upgrade to install it`, Code.FailedPrecondition);
    }
    const [{ n } = { n: 0 }] = await tx<{ n: number }[]>`select count(*)::int as n from plugins.installations where user_id = ${user.userId}`;
    if (n >= MAX_INSTALLS[tier]) throw new ConnectError(`the ${tierName(tier)} tier allows ${MAX_INSTALLS[tier]} installed plugins; uninstall one first`, Code.ResourceExhausted);
    const [row] = await tx<{ plugin_version: string; suspended: boolean; created_at: Date }[]>`
      insert into plugins.installations (user_id, plugin_id, plugin_version) values (${user.userId}, ${pluginId}, ${plugin.version})
      on conflict do nothing returning plugin_version, suspended, created_at`;
    if (row === undefined) throw new ConnectError(`${plugin.display_name} is already installed`, Code.AlreadyExists);
    if (idempotencyKey !== "") {
      await tx`insert into plugins.install_requests (user_id, idempotency_key, plugin_id) values (${user.userId}, ${idempotencyKey}, ${pluginId})
               on conflict (user_id, idempotency_key) do update set plugin_id = excluded.plugin_id, created_at = now()`;
    }
    await tx`update plugins.plugins set install_count = install_count + 1 where id = ${pluginId}`;
    await recordRevenue(tx, user.userId, plugin);
    await events.publish(
      tx,
      PluginInstalledSchema,
      create(PluginInstalledSchema, {
        userId: user.userId,
        pluginId,
        pluginVersion: plugin.version,
        priceMinorUnits: BigInt(plugin.price_minor_units),
        currencyCode: plugin.currency_code,
        occurTime: timestampFromDate(row.created_at),
      }),
    );
    return row;
  }

  async function recordRevenue(tx: TransactionSql, userId: string, plugin: PluginRow): Promise<void> {
    const price = BigInt(plugin.price_minor_units);
    if (price === 0n) return;
    const split = splitRevenue(price);
    await tx`insert into plugins.revenue_events (user_id, plugin_id, publisher, price_minor_units, currency_code, publisher_minor_units, platform_minor_units)
             values (${userId}, ${plugin.id}, ${plugin.publisher}, ${price.toString()}, ${plugin.currency_code}, ${split.publisher.toString()}, ${split.platform.toString()})`;
  }

  async function callTool(userId: string, pluginId: string, toolName: string, callId: string, args: Record<string, unknown>, timeoutMs: number): Promise<CallPluginToolResponse> {
    const installed = (await installedTools(db.sql, userId)).find((t) => t.pluginId === pluginId && t.tool.name === toolName);
    if (installed === undefined || installed.tool.runtime !== ToolRuntime.SERVER) {
      throw new ConnectError(`the user has no active installation of "${pluginId}" with a server tool "${toolName}"`, Code.NotFound);
    }
    // Checked again at every call (the list may have changed since the listing was stored); nothing ran, so nothing is recorded.
    const refusal = endpointRefusal(installed.endpoint, deps.allowedHosts);
    if (refusal !== undefined) return create(CallPluginToolResponseSchema, { content: `the tool ${toolName} may not be called: ${refusal}`, isError: true });
    const [claimed] = await db.sql<{ call_id: string }[]>`
      insert into plugins.tool_calls (user_id, call_id, plugin_id, tool_name, deadline)
      values (${userId}, ${callId}, ${pluginId}, ${toolName}, ${new Date(Date.now() + timeoutMs + outcomeWriteMarginMs)})
      on conflict do nothing returning call_id`;
    if (claimed === undefined) return recordedOutcome(userId, callId, timeoutMs);
    const outcome = await mcp.call(installed.endpoint, toolName, args, timeoutMs);
    await db.sql`update plugins.tool_calls set content = ${outcome.content}, is_error = ${outcome.isError}, structured_json = ${outcome.structuredJson}
                 where user_id = ${userId} and call_id = ${callId}`;
    return create(CallPluginToolResponseSchema, outcome);
  }

  /**
   * The outcome of a call id seen before. While the first call may still be
   * running (its deadline is ahead), waits for it, at most `waitMs`, so a
   * retry after a lost reply or a chat takeover gets the real outcome.
   */
  async function recordedOutcome(userId: string, callId: string, waitMs: number): Promise<CallPluginToolResponse> {
    const giveUp = Date.now() + waitMs;
    for (;;) {
      const [row] = await db.sql<{ content: string | null; is_error: boolean | null; structured_json: string; deadline: Date | null }[]>`
        select content, is_error, structured_json, deadline from plugins.tool_calls where user_id = ${userId} and call_id = ${callId}`;
      if (row !== undefined && row.content !== null) {
        return create(CallPluginToolResponseSchema, { content: row.content, isError: row.is_error === true, structuredJson: row.structured_json });
      }
      const firstMayFinish = row?.deadline != null && row.deadline.getTime() > Date.now();
      if (!firstMayFinish) {
        // Started before and never finished (a crash): it may have run, so it is not run again.
        return create(CallPluginToolResponseSchema, { content: "this call was started before and its outcome is unknown; it was not repeated", isError: true });
      }
      if (Date.now() >= giveUp) {
        return create(CallPluginToolResponseSchema, { content: "this call is still running from an earlier attempt; its outcome is not known yet", isError: true });
      }
      await new Promise((r) => setTimeout(r, repeatPollMs));
    }
  }

  return register(PluginService, {
    async listPlugins(req, ctx) {
      const user = caller(ctx);
      const words = req.query.trim() === "" ? [] : req.query.trim().split(/\s+/);
      const fingerprint = queryFingerprint([user.userId, req.category, words, req.installedOnly]);
      const offset = decodePageToken(req.pageToken, fingerprint);
      const size = req.pageSize === 0 ? 50 : req.pageSize;
      const rows = await listPlugins(db.sql, { userId: user.userId, category: req.category, words, installedOnly: req.installedOnly }, offset, size + 1);
      return {
        plugins: rows.slice(0, size).map((r) => toPlugin(r, { installed: r.installed, suspended: r.suspended === true })),
        nextPageToken: rows.length > size ? encodePageToken(offset + size, fingerprint) : "",
      };
    },

    async getPlugin(req, ctx) {
      const user = caller(ctx);
      const id = req.name.slice("plugins/".length);
      const row = await findPlugin(db.sql, id);
      if (row === undefined) throw new ConnectError(`no plugin "${id}" in the marketplace`, Code.NotFound);
      const inst = await findInstallation(db.sql, user.userId, id);
      return { plugin: toPlugin(row, { installed: inst !== undefined, suspended: inst?.suspended === true }) };
    },

    async install(req, ctx) {
      const user = callingUser(ctx);
      const row = await db.tx((tx) => install(tx, user, req.pluginId, req.idempotencyKey));
      return {
        installation: create(InstallationSchema, {
          name: `users/${user.userId}/installations/${req.pluginId}`,
          userId: user.userId,
          pluginId: req.pluginId,
          pluginVersion: row.plugin_version,
          createTime: timestampFromDate(row.created_at),
        }),
      };
    },

    async uninstall(req, ctx) {
      const user = callingUser(ctx);
      await db.tx(async (tx) => {
        await lockUser(tx, user.userId);
        const [gone] = await tx`delete from plugins.installations where user_id = ${user.userId} and plugin_id = ${req.pluginId} returning plugin_id`;
        if (gone === undefined) throw new ConnectError(`"${req.pluginId}" is not installed`, Code.NotFound);
        await tx`update plugins.plugins set install_count = install_count - 1 where id = ${req.pluginId}`;
        await events.publish(tx, PluginUninstalledSchema, create(PluginUninstalledSchema, { userId: user.userId, pluginId: req.pluginId, occurTime: timestampFromDate(new Date()) }));
      });
      return {};
    },

    async upsertPlugin(req) {
      const refusal = upsertRefusal(req, deps.allowedHosts);
      if (refusal !== undefined) throw new ConnectError(refusal, Code.InvalidArgument);
      const row = await upsertPlugin(db.sql, {
        id: req.pluginId,
        display_name: req.displayName,
        description: req.description,
        category: req.category,
        publisher: req.publisher,
        version: req.version,
        min_tier: req.minTier === Tier.UNSPECIFIED ? Tier.FREE : req.minTier,
        price_minor_units: req.priceMinorUnits.toString(),
        currency_code: req.currencyCode,
        tools: toolsJson(req.tools as PluginTool[]),
        mcp_endpoint: req.mcpEndpoint,
      });
      return { plugin: toPlugin(row, { installed: false, suspended: false }) };
    },

    async listInstalledTools(req) {
      const tools = await installedTools(db.sql, req.userId);
      return { tools: tools.map((t) => ({ pluginId: t.pluginId, tool: t.tool })) };
    },

    async callPluginTool(req, ctx) {
      let args: unknown;
      try {
        args = req.argumentsJson === "" ? {} : JSON.parse(req.argumentsJson);
      } catch {
        args = undefined;
      }
      if (args === null || typeof args !== "object" || Array.isArray(args)) throw new ConnectError("arguments_json: must be a JSON object", Code.InvalidArgument);
      const wanted = req.timeoutMs === 0 ? deps.defaultToolTimeoutMs : req.timeoutMs;
      // Leave the reply time to travel back before the caller's own deadline.
      const left = ctx.timeoutMs();
      const timeoutMs = left === undefined ? wanted : Math.max(1, Math.min(wanted, left - 50));
      return callTool(req.userId, req.pluginId, req.toolName, req.callId, args as JsonObject, timeoutMs);
    },
  });
}
