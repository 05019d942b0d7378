/**
 * Rate-limit variables: requests per minute per user, by tier. Part of the
 * platform settings (see ../settings.ts) so tests give each process its own.
 */
import { TIERS } from "../auth/claims.js";
import { bool, env, int } from "../config.js";
import type { TierLimits } from "./middleware.js";

const perMinute = int(1, 1_000_000);

/** Spread into `platformVars`. */
export const limitVars = {
  RATE_LIMIT_ENABLED: env("whether per-user rate limits apply (they need the database)", bool, true),
  RATE_LIMIT_FREE: env("requests per minute a free-tier user may make, across all instances", perMinute, 20),
  RATE_LIMIT_PRO: env("requests per minute a pro-tier user may make, across all instances", perMinute, 60),
  RATE_LIMIT_POWER: env("requests per minute a power-tier user may make, across all instances", perMinute, 120),
  RATE_LIMIT_TEAM: env("requests per minute a team-tier user may make, across all instances", perMinute, 200),
};

/** The per-tier limits the settings give: RATE_LIMIT_<NAME> for each tier of TIERS. */
export function tierLimitsOf(settings: { readonly [K in Exclude<keyof typeof limitVars, "RATE_LIMIT_ENABLED">]: number }): TierLimits {
  const byName = settings as unknown as Readonly<Record<string, number>>;
  return Object.fromEntries(TIERS.map(({ tier, name }) => [tier, byName[`RATE_LIMIT_${name.toUpperCase()}`]])) as unknown as TierLimits;
}
