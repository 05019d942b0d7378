/**
 * Schema migrations: ordered SQL files `NNN_name.sql` per service (the
 * platform's own first), each applied once, in a transaction, recorded in
 * `platform.migrations` with its checksum. Each service gets a schema named
 * after it, and its files run with that schema first on the search_path.
 *
 * Everything happens under one PostgreSQL advisory lock, so replicas that
 * start together apply each file exactly once: the first applies, the others
 * wait, then find nothing left to do. A file changed after it was applied
 * stops the run (fix it with a new file instead).
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Sql } from "postgres";

/** A folder of one service's migration files. */
export interface MigrationSource {
  /** The service, also its schema name: lower-case letters, digits and `_`. */
  readonly service: string;
  /** The folder holding `NNN_name.sql` files (a file: URL ending in "/"); none: the schema only. */
  readonly dir?: URL;
}

/** One applied (or to-be-applied) migration. */
export interface MigrationFile {
  readonly service: string;
  readonly version: number;
  readonly name: string;
  readonly checksum: string;
  readonly sql: string;
}

/** The platform's own tables (outbox, processed events, rate limits). */
export const platformMigrations: MigrationSource = { service: "platform", dir: new URL("./migrations/", import.meta.url) };

/** Arbitrary, fixed: every Switchyard process contends for this one lock. */
const LOCK_KEY = 7_362_512_001;
const filePattern = /^(\d{3,})_([a-z0-9_]+)\.sql$/;
const servicePattern = /^[a-z][a-z0-9_]{0,62}$/;

/**
 * Reads the migration files of `sources`, in order. Throws naming the file
 * when a name does not follow `NNN_name.sql`, a version repeats, or a
 * service name cannot be a schema name.
 */
export function readMigrations(sources: readonly MigrationSource[]): MigrationFile[] {
  const out: MigrationFile[] = [];
  for (const { service, dir } of sources) {
    if (!servicePattern.test(service)) throw new Error(`service "${service}" cannot name a schema: use lower-case letters, digits and _`);
    if (dir === undefined) continue;
    const path = fileURLToPath(dir);
    const seen = new Map<number, string>();
    const files = readdirSync(path).filter((f) => f.endsWith(".sql")).sort();
    for (const file of files) {
      const match = filePattern.exec(file);
      if (!match) throw new Error(`migration ${service}/${file}: name it NNN_name.sql (digits, then lower-case letters, digits, _)`);
      const version = Number(match[1]);
      if (seen.has(version)) throw new Error(`migrations ${service}/${seen.get(version)} and ${service}/${file} share version ${version}`);
      seen.set(version, file);
      const sql = readFileSync(`${path}/${file}`, "utf8");
      out.push({ service, version, name: file, checksum: createHash("sha256").update(sql).digest("hex"), sql });
    }
  }
  return out;
}

/**
 * Applies every migration of `sources` not yet applied, under the advisory
 * lock; idempotent. Resolves with the files it applied (empty when none
 * were due). Rejects naming the file when one fails (that file's changes
 * are rolled back; earlier ones stay) or was changed after being applied.
 */
export async function migrate(sql: Sql, sources: readonly MigrationSource[]): Promise<MigrationFile[]> {
  const all = [platformMigrations, ...sources.filter((s) => s.service !== "platform")];
  const files = readMigrations(all);
  const conn = await sql.reserve();
  const applied: MigrationFile[] = [];
  try {
    await conn`select pg_advisory_lock(${LOCK_KEY}::bigint)`;
    try {
      await conn`create schema if not exists platform`;
      await conn`
        create table if not exists platform.migrations (
          service text not null,
          version integer not null,
          name text not null,
          checksum text not null,
          applied_at timestamptz not null default now(),
          primary key (service, version)
        )`;
      const done = new Map<string, string>();
      for (const r of await conn<{ service: string; version: number; checksum: string }[]>`
        select service, version, checksum from platform.migrations`) {
        done.set(`${r.service}/${r.version}`, r.checksum);
      }
      for (const { service } of all) await conn`create schema if not exists ${conn(service)}`;
      for (const f of files) {
        const previous = done.get(`${f.service}/${f.version}`);
        if (previous !== undefined) {
          if (previous !== f.checksum) {
            throw new Error(`migration ${f.service}/${f.name} was changed after it was applied; add a new migration instead`);
          }
          continue;
        }
        await conn`begin`;
        try {
          await conn`select set_config('search_path', ${`${f.service}, public`}, true)`;
          // Migration files are code from the repository, never input.
          await conn.unsafe(f.sql).simple();
          await conn`
            insert into platform.migrations (service, version, name, checksum)
            values (${f.service}, ${f.version}, ${f.name}, ${f.checksum})`;
          await conn`commit`;
        } catch (err) {
          await conn`rollback`.catch(() => undefined);
          throw new Error(`migration ${f.service}/${f.name} failed: ${(err as Error).message}`, { cause: err });
        }
        applied.push(f);
      }
    } finally {
      await conn`select pg_advisory_unlock(${LOCK_KEY}::bigint)`.catch(() => undefined);
    }
  } finally {
    conn.release();
  }
  return applied;
}
