/**
 * Access-token verification, as every service does it.
 *
 * Before any cryptography the raw token is held to the shape auth issues:
 * at most `maxTokenBytes`, exactly three segments (five is a JWE), a header
 * naming only `alg`, `kid` and `typ`, with `alg` ES256, `typ` at+jwt and a
 * well-formed `kid`. So `jku`, `x5u`, `jwk`, `x5c` and `crit` headers are
 * refused outright (nothing is ever fetched from a token), and a hostile
 * `kid` never reaches the key lookup. jose then checks the signature with the
 * algorithm pinned, and `iss`, `aud`, `exp`, `nbf`.
 *
 * Failures are ConnectErrors: UNAUTHENTICATED with a message saying what to
 * do (never echoing the token or its header values), or UNAVAILABLE when the
 * keys cannot be fetched right now.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { errors, jwtVerify, type JWTVerifyGetKey } from "jose";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { isId } from "../ids.js";
import { ACCESS_TOKEN_ALG, ACCESS_TOKEN_TYP, SERVICE_ROLE, tierFromClaim } from "./claims.js";
import type { Principal } from "./principal.js";

/** Options of `createAccessTokenVerifier`. */
export interface AccessTokenVerifierOptions {
  /** Finds the public key of a token's `kid` (the in-process key set or a remote JWKS). */
  readonly keys: JWTVerifyGetKey;
  readonly issuer: string;
  readonly audience: string;
  /** Longest token accepted, in bytes (default 8192; auth's tokens are under 1 KiB). */
  readonly maxTokenBytes?: number;
  /** Seconds of clock skew allowed on `exp` and `nbf` (default 30). */
  readonly clockToleranceS?: number;
  /** Verified tokens remembered, to skip the signature check on reuse (default 10000; 0 = none). */
  readonly cacheSize?: number;
  /** Longest a verified token is remembered, in ms (default 60000), whatever its `exp`. */
  readonly cacheTtlMs?: number;
  /** The clock (tests); defaults to Date.now. */
  readonly now?: () => number;
}

/** Verifies access tokens. */
export interface AccessTokenVerifier {
  /** The principal of a valid token; rejects with UNAUTHENTICATED (or UNAVAILABLE) otherwise. */
  verify(token: string): Promise<Principal>;
  /**
   * The principal of a token this verifier accepted before and still
   * remembers, decided now without a promise; undefined when it must go
   * through `verify` (unknown, expired from the cache, or caching off).
   */
  cached(token: string): Principal | undefined;
  /** Forgets remembered tokens (call when a key is withdrawn). */
  clearCache(): void;
}

const allowedHeader = new Set(["alg", "kid", "typ"]);
const segment = /^[A-Za-z0-9_-]*$/;

function unauthenticated(message: string): ConnectError {
  return new ConnectError(message, Code.Unauthenticated);
}

const signInAgain = "sign in again, or refresh your session, to get a new access token";

/** Checks the raw token and its header; returns nothing or throws UNAUTHENTICATED. */
function checkShape(token: string, maxBytes: number): void {
  // Length in UTF-16 units bounds the byte length of the ASCII a JWT is; checked first, before any work.
  if (token.length > maxBytes) throw unauthenticated(`the access token is longer than ${maxBytes} bytes, so auth did not issue it; ${signInAgain}`);
  const parts = token.split(".");
  if (parts.length === 5) throw unauthenticated("the access token is encrypted (JWE); send the signed access token (JWS) that Login or Refresh returned");
  if (parts.length !== 3 || parts.some((p) => p === "" || !segment.test(p))) {
    throw unauthenticated("the access token is not a signed JWT (three base64url segments: header.payload.signature); send the access_token that Login or Refresh returned");
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(parts[0]!, "base64url").toString("utf8")) as Record<string, unknown>;
  } catch {
    throw unauthenticated("the access token's header is not valid JSON; send the access_token that Login or Refresh returned");
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw unauthenticated("the access token's header is not a JSON object; send the access_token that Login or Refresh returned");
  }
  for (const name of Object.keys(header)) {
    if (!allowedHeader.has(name)) {
      const shown = /^[a-z0-9]{1,8}$/i.test(name) ? ` "${name}"` : "";
      throw unauthenticated(`the access token's header has a parameter${shown} that Switchyard tokens never carry (only alg, kid, typ); ${signInAgain}`);
    }
  }
  if (header.alg !== ACCESS_TOKEN_ALG) throw unauthenticated(`the access token is not signed with ${ACCESS_TOKEN_ALG}, the only algorithm accepted; ${signInAgain}`);
  if (header.typ !== ACCESS_TOKEN_TYP) {
    throw unauthenticated(`the token is not an access token (its typ must be "${ACCESS_TOKEN_TYP}"); send the access_token, not a refresh or ID token`);
  }
  // auth generates key ids that obey the id rule; anything else is refused before any lookup.
  if (typeof header.kid !== "string" || !isId(header.kid)) {
    throw unauthenticated(`the access token names no signing key auth could have used (bad kid); ${signInAgain}`);
  }
}

/** Turns a jose failure into the error the caller gets. */
function mapJoseError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof errors.JWTExpired) return unauthenticated("the access token has expired; refresh your session to get a new one");
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case "nbf":
        return unauthenticated("the access token is not valid yet (nbf is in the future); check the client's clock, or sign in again");
      case "iss":
        return unauthenticated(`the access token was issued by another issuer than this deployment's auth; ${signInAgain}`);
      case "aud":
        return unauthenticated(`the access token is meant for another audience than this deployment; ${signInAgain}`);
      default:
        return unauthenticated(`the access token's "${err.claim.replace(/[^a-z_]/gi, "").slice(0, 16)}" claim is missing or invalid; ${signInAgain}`);
    }
  }
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
    return unauthenticated(`the access token was signed by a key this deployment does not publish (retired or never issued here); ${signInAgain}`);
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return unauthenticated(`the access token's signature is invalid; ${signInAgain}`);
  if (err instanceof errors.JOSEError) return unauthenticated(`the access token is malformed; ${signInAgain}`);
  // Not a verdict on the token (a key source failing unexpectedly): the platform reports it as INTERNAL.
  throw err;
}

function principalOf(payload: Record<string, unknown>): Principal {
  const { sub, roles, tier, exp } = payload;
  if (typeof sub !== "string" || sub === "" || sub.length > 128) throw unauthenticated(`the access token has no valid subject (sub); ${signInAgain}`);
  if (typeof exp !== "number") throw unauthenticated(`the access token has no expiry (exp); ${signInAgain}`);
  if (roles !== undefined && (!Array.isArray(roles) || roles.length > 32 || !roles.every((r) => typeof r === "string"))) {
    throw unauthenticated(`the access token's roles claim is not a list of names; ${signInAgain}`);
  }
  const roleList = (roles as string[] | undefined) ?? [];
  const parsedTier = tierFromClaim(tier);
  if (parsedTier === undefined && !roleList.includes(SERVICE_ROLE)) throw unauthenticated(`the access token carries no valid tier; ${signInAgain}`);
  return Object.freeze({ userId: sub, tier: parsedTier ?? Tier.UNSPECIFIED, roles: Object.freeze([...roleList]), expiresAt: exp * 1000 });
}

/**
 * Creates a verifier. A verified token is remembered (keyed by the whole
 * token string, never a part of it: a cached signature must not vouch for
 * another payload) until its `exp` or `cacheTtlMs`, whichever comes first;
 * only tokens that passed every check enter the cache.
 */
export function createAccessTokenVerifier(options: AccessTokenVerifierOptions): AccessTokenVerifier {
  const maxBytes = options.maxTokenBytes ?? 8192;
  const tolerance = options.clockToleranceS ?? 30;
  const cacheSize = options.cacheSize ?? 10_000;
  const cacheTtl = options.cacheTtlMs ?? 60_000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, { principal: Principal; until: number }>();
  const verifyOptions = {
    algorithms: [ACCESS_TOKEN_ALG],
    issuer: options.issuer,
    audience: options.audience,
    typ: ACCESS_TOKEN_TYP,
    clockTolerance: tolerance,
    requiredClaims: ["sub", "exp", "iat"],
  };

  const cached = (token: string): Principal | undefined => {
    const hit = cache.get(token);
    if (hit === undefined) return undefined;
    if (now() < hit.until) return hit.principal;
    cache.delete(token);
    return undefined;
  };

  return {
    cached,
    async verify(token) {
      const known = cached(token);
      if (known !== undefined) return known;
      checkShape(token, maxBytes);
      let payload: Record<string, unknown>;
      try {
        ({ payload } = await jwtVerify(token, options.keys, { ...verifyOptions, currentDate: new Date(now()) }));
      } catch (err) {
        throw mapJoseError(err);
      }
      const principal = principalOf(payload);
      if (cacheSize > 0) {
        if (cache.size >= cacheSize) cache.delete(cache.keys().next().value!);
        cache.set(token, { principal, until: Math.min(principal.expiresAt + tolerance * 1000, now() + cacheTtl) });
      }
      return principal;
    },
    clearCache: () => cache.clear(),
  };
}
