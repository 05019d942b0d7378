/**
 * The shape of a Switchyard access token, shared by the issuer (the auth
 * service) and the verifier (every service): one place names the algorithm,
 * the `typ`, the claims and their encodings.
 */
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";

/** The one signing algorithm accepted (pinned: every other `alg` is refused). */
export const ACCESS_TOKEN_ALG = "ES256";
/** The JOSE `typ` of access tokens (RFC 9068), which a refresh token or ID token never has. */
export const ACCESS_TOKEN_TYP = "at+jwt";
/** The longest access-token lifetime the issuer allows, in seconds. */
export const MAX_ACCESS_TOKEN_TTL_S = 15 * 60;
/** The role that marks another Switchyard service; never granted to a user. */
export const SERVICE_ROLE = "service";

const tierNames: ReadonlyMap<Tier, string> = new Map([
  [Tier.FREE, "free"],
  [Tier.PRO, "pro"],
  [Tier.POWER, "power"],
  [Tier.TEAM, "team"],
]);
const tiersByName: ReadonlyMap<string, Tier> = new Map([...tierNames].map(([t, n]) => [n, t]));

/** The `tier` claim of a tier ("free", "pro", "power", "team"); TIER_UNSPECIFIED has none. */
export function tierClaim(tier: Tier): string | undefined {
  return tierNames.get(tier);
}

/** The tier a `tier` claim names, or undefined for anything else. */
export function tierFromClaim(claim: unknown): Tier | undefined {
  return typeof claim === "string" ? tiersByName.get(claim) : undefined;
}
