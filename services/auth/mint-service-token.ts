/**
 * `npm run auth:service-token -- <service> [--ttl-hours N]`: mints a service
 * token (sub "service:<service>", roles ["service"]) for a process that runs
 * without auth, to pass it as AUTH_SERVICE_TOKEN. Prints the token alone on
 * stdout (so `$(npm run -s auth:service-token -- chat)` works) and its expiry
 * on stderr.
 *
 * Reads DATABASE_URL and AUTH_MASTER_KEY (the signing keys live in auth's
 * tables, sealed under the master key) and AUTH_ISSUER / AUTH_AUDIENCE. The
 * signing key stays published until the token expires, whatever the
 * rotation, so keep lifetimes short (default 24 h, at most 30 days) and
 * re-mint on deploy: a bearer token cannot be revoked before it expires
 * except by withdrawing its key.
 */
import { parseArgs } from "node:util";
import { ConfigError, createDatabase, createLogger, MAX_ACCESS_TOKEN_TTL_S, readPlatformSettings } from "../../platform/index.js";
import { createKeyStore } from "./key-store.js";
import { loadMasterKey } from "./master-key.js";
import { readAuthSettings } from "./settings.js";
import { createTokenIssuer } from "./tokens.js";

const usage = "usage: npm run auth:service-token -- <service> [--ttl-hours N]   (N from 1 to 720, default 24)";

try {
  const { positionals, values } = parseArgs({ allowPositionals: true, options: { "ttl-hours": { type: "string", default: "24" } } });
  const service = positionals[0];
  const hours = Number(values["ttl-hours"]);
  if (positionals.length !== 1 || !/^[a-z][a-z0-9-]{0,31}$/.test(service!) || !Number.isInteger(hours) || hours < 1 || hours > 720) {
    process.stderr.write(`${usage}\n`);
    process.exit(2);
  }
  const platform = readPlatformSettings();
  const auth = readAuthSettings();
  if (platform.DATABASE_URL === "") throw new ConfigError(["DATABASE_URL is required: the signing keys are in auth's tables"]);
  const log = createLogger("silent");
  const db = createDatabase(platform.DATABASE_URL, { max: 1, applicationName: "switchyard-mint-service-token" });
  try {
    const keys = createKeyStore({
      db,
      masterKey: loadMasterKey(auth.AUTH_MASTER_KEY, undefined, log),
      accessTtlS: MAX_ACCESS_TOKEN_TTL_S,
      rotationIntervalMs: auth.AUTH_KEY_ROTATION_HOURS * 3600_000,
      prepublishMs: 3600_000,
      log,
    });
    await keys.maintain();
    const tokens = createTokenIssuer({ keys, issuer: platform.AUTH_ISSUER, audience: platform.AUTH_AUDIENCE, accessTtlS: auth.AUTH_ACCESS_TOKEN_TTL_S });
    const issued = await tokens.issueService(service!, hours * 3600);
    process.stdout.write(`${issued.token}\n`);
    process.stderr.write(`service token for "${service}", expires ${issued.expiresAt.toISOString()}\n`);
  } finally {
    await db.close();
  }
} catch (err) {
  const message = err instanceof ConfigError ? err.message : err instanceof Error ? err.message : String(err);
  process.stderr.write(`auth:service-token: ${message}\n`);
  process.exit(1);
}
