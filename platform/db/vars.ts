/**
 * Database variables, part of the platform settings (see ../settings.ts).
 */
import { env, int, str, url } from "../config.js";

const singleHost = url("postgres", "postgresql");

/**
 * Parses DATABASE_URL: a postgres:// URL, with one host or several
 * (`postgres://u:p@primary:5432,standby:5432/db?target_session_attrs=read-write`,
 * as postgres.js and libpq read it). Each host is checked as a URL of its own.
 */
export function databaseUrl(raw: string): string {
  const scheme = /^(postgres|postgresql):\/\//.exec(raw);
  if (scheme === null) return singleHost(raw); // names the wrong scheme
  const rest = raw.slice(scheme[0].length);
  const authority = rest.split(/[/?]/, 1)[0]!;
  const at = authority.lastIndexOf("@");
  const credentials = at === -1 ? "" : authority.slice(0, at + 1);
  const hosts = authority.slice(at + 1).split(",");
  if (hosts.some((h) => h === "")) throw new Error("expected host[:port] entries separated by commas, found an empty one");
  for (const host of hosts) singleHost(`${scheme[0]}${credentials}${host}${rest.slice(authority.length)}`);
  const attrs = new URLSearchParams(rest.includes("?") ? rest.slice(rest.indexOf("?") + 1) : "").get("target_session_attrs");
  if (attrs !== null && !["read-write", "read-only", "primary", "standby", "prefer-standby"].includes(attrs)) {
    throw new Error(`target_session_attrs must be read-write, primary, read-only, standby or prefer-standby, got "${attrs}"`);
  }
  return raw;
}

/** Spread into `platformVars`. */
export const dbVars = {
  DATABASE_URL: env(
    "PostgreSQL URL (postgres://user:pass@host:5432/db); for failover list the primary and its standbys with target_session_attrs=read-write (postgres://user:pass@pg1:5432,pg2:5432/db?target_session_attrs=read-write): new connections go to whichever is writable, so a promoted standby is followed without a restart; unset: an embedded PostgreSQL (PGlite) with its data under DATA_DIR/pg",
    databaseUrl,
    "",
    true,
  ),
  DATABASE_POOL_MAX: env("greatest number of PostgreSQL connections this process opens", int(1, 500), 10),
  DATA_DIR: env("folder for local data: the embedded PostgreSQL (pg/) and a locally started nats-server's store (nats/)", str, ".data"),
};
