/**
 * The variables every platform process reads. Service modules declare their
 * own next to their code with the same helpers (see config.ts).
 */
import { authPlatformVars } from "./auth/settings.js";
import { env, int, list, oneOf, readConfig, str, type ConfigOf } from "./config.js";
import { corsVars } from "./cors.js";
import { dbVars } from "./db/vars.js";
import { limitVars } from "./limits/vars.js";
import { natsVars } from "./nats/vars.js";
import { tracingVars } from "./telemetry/vars.js";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";

export const platformVars = {
  PORT: env("TCP port serving gRPC, gRPC-Web, Connect and HTTP", int(0, 65535), 8080),
  HOST: env("address to listen on", str, "0.0.0.0"),
  SERVICES: env(
    "comma-separated services to run (auth, gateway, chat, storage, billing, plugins, web); empty = all",
    list(oneOf("auth", "gateway", "chat", "storage", "billing", "plugins", "web")),
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
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(raw)) throw new Error(`must match ^[A-Za-z0-9_-]{1,64}$, got "${raw}"`);
      return raw;
    },
    () => `${hostname().replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40)}-${randomBytes(3).toString("hex")}`,
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
