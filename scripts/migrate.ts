/**
 * `npm run migrate`: applies every pending migration (the platform's, then
 * each service's) to DATABASE_URL, or to the embedded PostgreSQL under
 * DATA_DIR/pg when it is unset. Idempotent; safe to run from several
 * replicas at once (an advisory lock serialises them). Exit 0 when the
 * schema is up to date, 1 when a migration failed, 2 for bad configuration.
 */
import { resolve } from "node:path";
import { serviceModules } from "../app/catalogue.js";
import { ConfigError } from "../platform/config.js";
import { createDatabase } from "../platform/db/database.js";
import { startEmbeddedPostgres } from "../platform/db/embedded.js";
import { migrate } from "../platform/db/migrate.js";
import { usesOf } from "../platform/dependencies.js";
import { readPlatformSettings } from "../platform/settings.js";

const started = performance.now();
let stopEmbedded: (() => Promise<void>) | undefined;
try {
  const settings = readPlatformSettings();
  let url = settings.DATABASE_URL;
  if (url === "") {
    const embedded = await startEmbeddedPostgres(resolve(settings.DATA_DIR, "pg"));
    stopEmbedded = () => embedded.stop();
    url = embedded.url;
  }
  const db = createDatabase(url, { max: 1, applicationName: "switchyard-migrate" });
  try {
    const sources = serviceModules.filter((m) => usesOf(m).has("db")).map((m) => ({ service: m.name, dir: m.migrations }));
    const applied = await migrate(db.sql, sources);
    const ms = (performance.now() - started).toFixed(0);
    if (applied.length === 0) process.stdout.write(`migrate: up to date, nothing to apply (${ms} ms)\n`);
    else process.stdout.write(`migrate: applied ${applied.map((f) => `${f.service}/${f.name}`).join(", ")} (${ms} ms)\n`);
  } finally {
    await db.close();
  }
  await stopEmbedded?.();
} catch (err) {
  await stopEmbedded?.().catch(() => undefined);
  if (err instanceof ConfigError) {
    process.stderr.write(`migrate: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`migrate: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
