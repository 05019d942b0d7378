/**
 * The variables every platform process reads. Service modules declare their
 * own next to their code with the same helpers (see config.ts).
 */
import { authPlatformVars } from "./auth/settings.js";
import { env, int, list, oneOf, readConfig, str, type ConfigOf } from "./config.js";
import { corsVars } from "./cors.js";
import { MODULE_NAME } from "./declarations.js";
import { dbVars } from "./db/vars.js";
import { ID_RULE, isId, NOT_ID_CHARACTERS } from "./ids.js";
import { limitVars } from "./limits/vars.js";
import { natsVars } from "./nats/vars.js";
import { tracingVars } from "./telemetry/vars.js";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";

function moduleName(raw: string): string {
  if (!MODULE_NAME.test(raw)) throw new Error(`"${raw}" is not a service module name (${MODULE_NAME})`);
  return raw;
}

export const platformVars = {
  PORT: env("TCP port serving gRPC, gRPC-Web, Connect and HTTP", int(0, 65535), 8080),
  HOST: env("address to listen on", str, "0.0.0.0"),
  SERVICES: env(
    'comma-separated service modules to run (the names in "What runs"); empty = all',
    list(moduleName),
    () => [],
  ),
  LOG_LEVEL: env("pino log level", oneOf("trace", "debug", "info", "warn", "error", "fatal", "silent"), "info"),
  READ_MAX_BYTES: env("largest request message accepted, in bytes", int(1024, 256 * 1024 * 1024), 4 * 1024 * 1024),
  WRITE_MAX_BYTES: env("largest response message sent, in bytes", int(1024, 256 * 1024 * 1024), 16 * 1024 * 1024),
  SHUTDOWN_GRACE_MS: env(
    "how long unary calls may run on after SIGTERM; at most 20 s, so that with module stops the process exits within 30 s",
    int(0, 20_000),
    20_000,
  ),
  ALLOWED_ORIGINS: corsVars.ALLOWED_ORIGINS,
  INSTANCE_ID: env(
    "this instance's id (presence, result subjects); letters, digits, _ and -",
    (raw) => {
      if (!isId(raw)) throw new Error(`must be ${ID_RULE}, got "${raw}"`);
      return raw;
    },
    () => `${hostname().replace(NOT_ID_CHARACTERS, "-").slice(0, 40)}-${randomBytes(3).toString("hex")}`,
  ),
  ...authPlatformVars,
  ...dbVars,
  ...natsVars,
  ...limitVars,
  ...tracingVars,
};

/** The parsed platform variables. */
export type PlatformSettings = ConfigOf<typeof platformVars>;

/** Reads the platform variables; throws ConfigError naming each bad one. */
export function readPlatformSettings(source: NodeJS.ProcessEnv = process.env): PlatformSettings {
  return readConfig(platformVars, source);
}
