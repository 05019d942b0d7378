/**
 * The auth service's own variables (the token-check ones, AUTH_ISSUER and
 * AUTH_AUDIENCE, are platform settings: platform/auth/settings.ts).
 */
import { type ConfigOf, env, int, MAX_ACCESS_TOKEN_TTL_S, readConfig } from "../../platform/index.js";
import { parseMasterKey } from "./master-key.js";
import { OWASP_ARGON2 } from "./passwords.js";

const minute = 60_000;

/** The auth service's variables, each with its description, parser and default (read at start by `readAuthSettings`). */
export const authVars = {
  AUTH_MASTER_KEY: env(
    "32 random bytes, base64 (openssl rand -base64 32): encrypts the private signing keys; " +
      "required with DATABASE_URL; without both, a development key is generated into DATA_DIR (.data/auth-master-key)",
    (raw) => (parseMasterKey(raw), raw),
    "",
    true,
  ),
  AUTH_ACCESS_TOKEN_TTL_S: env(`access-token lifetime in seconds (at most ${MAX_ACCESS_TOKEN_TTL_S})`, int(30, MAX_ACCESS_TOKEN_TTL_S), MAX_ACCESS_TOKEN_TTL_S),
  AUTH_REFRESH_TOKEN_TTL_DAYS: env("refresh-token lifetime in days, renewed by every refresh", int(1, 365), 30),
  AUTH_KEY_ROTATION_HOURS: env("how long a signing key signs before the next one takes over", int(1, 24 * 365), 24 * 7),
  AUTH_ARGON2_MEMORY_KIB: env("argon2id memory per hash, KiB (OWASP minimum 19456)", int(OWASP_ARGON2.memoryKiB, 4 * 1024 * 1024), OWASP_ARGON2.memoryKiB),
  AUTH_ARGON2_TIME_COST: env("argon2id passes per hash (OWASP minimum 2)", int(OWASP_ARGON2.timeCost, 100), OWASP_ARGON2.timeCost),
  AUTH_LOGIN_MAX_PER_ACCOUNT: env("login attempts allowed per account (email) per window", int(1, 1_000_000), 10),
  AUTH_LOGIN_MAX_PER_ADDRESS: env("login attempts allowed per client address per window", int(1, 1_000_000), 50),
  AUTH_LOGIN_WINDOW_MS: env("login throttle window, ms; a throttled account or address unblocks when it ends", int(1000, 24 * 60 * minute), 15 * minute),
  AUTH_REGISTER_MAX_PER_ADDRESS: env("registrations allowed per client address per window", int(1, 1_000_000), 20),
  AUTH_REGISTER_WINDOW_MS: env("registration throttle window, ms", int(1000, 24 * 60 * minute), 60 * minute),
  AUTH_TRUSTED_PROXY_HOPS: env(
    "proxies in front of auth whose x-forwarded-for is believed (1 behind Envoy); 0 = use the TCP peer's address",
    int(0, 10),
    0,
  ),
};

/** The auth service's parsed variables. */
export type AuthSettings = ConfigOf<typeof authVars>;

/** Reads the auth variables from `source`; throws ConfigError naming each bad one. */
export function readAuthSettings(source: NodeJS.ProcessEnv = process.env): AuthSettings {
  return readConfig(authVars, source);
}
