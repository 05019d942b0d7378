/**
 * The plugins schema in SQL: the marketplace listing, installations, revenue
 * and tool-call outcomes, and their mapping to the contract's messages.
 */
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { type Plugin, PluginSchema, type PluginTool, PluginToolSchema } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import type { Sql, TransactionSql } from "../../platform/index.js";

/** A row of plugins.plugins. */
export interface PluginRow {
  readonly id: string;
  readonly display_name: string;
  readonly description: string;
  readonly category: string;
  readonly publisher: string;
  readonly version: string;
  readonly min_tier: number;
  readonly price_minor_units: string;
  readonly currency_code: string;
  readonly tools: JsonValue[];
  readonly mcp_endpoint: string;
  readonly install_count: string;
  readonly created_at: Date;
  readonly updated_at: Date;
}

type Db = Sql | TransactionSql;

/** The tools of a row, as messages. */
export function toolsOf(row: PluginRow): PluginTool[] {
  return row.tools.map((t) => fromJson(PluginToolSchema, t));
}

/** A listing as the contract shows it; `installed` and `suspended` for the caller. */
export function toPlugin(row: PluginRow, caller: { installed: boolean; suspended: boolean }): Plugin {
  const tools = toolsOf(row);
  return create(PluginSchema, {
    name: `plugins/${row.id}`,
    pluginId: row.id,
    displayName: row.display_name,
    description: row.description,
    category: row.category,
    publisher: row.publisher,
    version: row.version,
    minTier: row.min_tier as Tier,
    priceMinorUnits: BigInt(row.price_minor_units),
    currencyCode: row.currency_code,
    tools: tools.map((t) => t.name),
    toolSpecs: tools,
    installCount: BigInt(row.install_count),
    installed: caller.installed,
    suspended: caller.suspended,
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}

/**
 * Serializes one user's installs, uninstalls and tier changes (a transaction
 * lock): a retry racing its first attempt then finds the first's idempotency
 * key, the per-tier install limit cannot be passed by installs side by side,
 * and an install cannot slip past a tier change that suspends plugins.
 */
export async function lockUser(tx: TransactionSql, userId: string): Promise<void> {
  await tx`select pg_advisory_xact_lock(hashtextextended(${`plugins.user:${userId}`}, 0))`;
}

/** The plugin `id`, or undefined. */
export async function findPlugin(db: Db, id: string): Promise<PluginRow | undefined> {
  const [row] = await db<PluginRow[]>`select * from plugins.plugins where id = ${id}`;
  return row;
}

/** The user's installation of `pluginId`, or undefined. */
export async function findInstallation(db: Db, userId: string, pluginId: string) {
  const [row] = await db<{ plugin_version: string; suspended: boolean; created_at: Date }[]>`
    select plugin_version, suspended, created_at from plugins.installations where user_id = ${userId} and plugin_id = ${pluginId}`;
  return row;
}

/** Filters of a marketplace listing. */
export interface ListFilters {
  readonly userId: string;
  readonly category: string;
  readonly words: readonly string[];
  readonly installedOnly: boolean;
}

/** One page of the marketplace, most installed first; each row with the caller's installation state. */
export async function listPlugins(db: Db, f: ListFilters, offset: number, limit: number) {
  const patterns = f.words.map((w) => `%${w.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
  return db<(PluginRow & { installed: boolean; suspended: boolean | null })[]>`
    select p.*, i.user_id is not null as installed, i.suspended
    from plugins.plugins p
    left join plugins.installations i on i.plugin_id = p.id and i.user_id = ${f.userId}
    where (${f.category} = '' or p.category = ${f.category})
      and (not ${f.installedOnly} or i.user_id is not null)
      and (select bool_and(p.display_name ilike w or p.description ilike w) from unnest(${patterns}::text[]) w) is not false
    order by p.install_count desc, p.id
    offset ${offset} limit ${limit}`;
}

/** Stores a listing (insert or replace); returns the row. */
export async function upsertPlugin(db: Db, p: Omit<PluginRow, "install_count" | "created_at" | "updated_at">): Promise<PluginRow> {
  const [row] = await db<PluginRow[]>`
    insert into plugins.plugins (id, display_name, description, category, publisher, version, min_tier, price_minor_units, currency_code, tools, mcp_endpoint)
    values (${p.id}, ${p.display_name}, ${p.description}, ${p.category}, ${p.publisher}, ${p.version}, ${p.min_tier}, ${p.price_minor_units},
            ${p.currency_code}, ${db.json(p.tools)}, ${p.mcp_endpoint})
    on conflict (id) do update set display_name = excluded.display_name, description = excluded.description, category = excluded.category,
      publisher = excluded.publisher, version = excluded.version, min_tier = excluded.min_tier, price_minor_units = excluded.price_minor_units,
      currency_code = excluded.currency_code, tools = excluded.tools, mcp_endpoint = excluded.mcp_endpoint, updated_at = now()
    returning *`;
  return row!;
}

/** The tools of a user's active installations, with their plugin's id and endpoint. */
export async function installedTools(db: Db, userId: string) {
  const rows = await db<PluginRow[]>`
    select p.* from plugins.installations i join plugins.plugins p on p.id = i.plugin_id
    where i.user_id = ${userId} and not i.suspended order by p.id`;
  return rows.flatMap((row) => toolsOf(row).map((tool) => ({ pluginId: row.id, endpoint: row.mcp_endpoint, tool })));
}

/** protobuf JSON of tools, for the jsonb column. */
export function toolsJson(tools: readonly PluginTool[]): JsonValue[] {
  return tools.map((t) => toJson(PluginToolSchema, t));
}
