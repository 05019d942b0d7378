/**
 * The shape of a Switchyard access token, shared by the issuer (the auth
 * service) and the verifier (every service): one place names the algorithm,
 * the `typ`, the claims and their encodings.
 */
import { Tier, TierSchema } from "../../gen/switchyard/common/v1/tier_pb.js";

/** The one signing algorithm accepted (pinned: every other `alg` is refused). */
export const ACCESS_TOKEN_ALG = "ES256";
/** The JOSE `typ` of access tokens (RFC 9068), which a refresh token or ID token never has. */
export const ACCESS_TOKEN_TYP = "at+jwt";
/** The longest access-token lifetime the issuer allows, in seconds. */
export const MAX_ACCESS_TOKEN_TTL_S = 15 * 60;
/** The role that marks another Switchyard service; never granted to a user. */
export const SERVICE_ROLE = "service";

/** A tier and its name in the `tier` claim (and in RATE_LIMIT_<NAME>). */
export interface TierInfo {
  readonly tier: Tier;
  /** Lower case: "free", "pro", "power", "team". */
  readonly name: string;
}

/**
 * Every tier a user can have, in the contract's order, named after the enum
 * value in `switchyard.common.v1.Tier` (TIER_FREE → "free"): the one list of
 * tiers, so a tier added to tier.proto reaches tokens and limits alike.
 */
export const TIERS: readonly TierInfo[] = TierSchema.values
  .filter((v) => v.number !== Tier.UNSPECIFIED)
  .map((v) => ({ tier: v.number as Tier, name: v.localName.toLowerCase() }));

const tierNames: ReadonlyMap<Tier, string> = new Map(TIERS.map(({ tier, name }) => [tier, name]));
const tiersByName: ReadonlyMap<string, Tier> = new Map(TIERS.map(({ tier, name }) => [name, tier]));

/** The `tier` claim of a tier ("free", "pro", "power", "team"); TIER_UNSPECIFIED has none. */
export function tierClaim(tier: Tier): string | undefined {
  return tierNames.get(tier);
}

/** The tier a `tier` claim names, or undefined for anything else. */
export function tierFromClaim(claim: unknown): Tier | undefined {
  return typeof claim === "string" ? tiersByName.get(claim) : undefined;
}
