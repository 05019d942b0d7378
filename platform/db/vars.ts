/**
 * Database variables, part of the platform settings (see ../settings.ts).
 */
import { env, int, str, url } from "../config.js";

/** Spread into `platformVars`. */
export const dbVars = {
  DATABASE_URL: env(
    "PostgreSQL URL (postgres://user:pass@host:5432/db); unset: an embedded PostgreSQL (PGlite) with its data under DATA_DIR/pg",
    url("postgres", "postgresql"),
    "",
    true,
  ),
  DATABASE_POOL_MAX: env("greatest number of PostgreSQL connections this process opens", int(1, 500), 10),
  DATA_DIR: env("folder for local data: the embedded PostgreSQL (pg/) and a locally started nats-server's store (nats/)", str, ".data"),
};
