/**
 * Minting access tokens: ES256 JWTs with `typ: at+jwt` and `kid`, signed by
 * the key store's current key, in the shape platform/auth/claims.ts defines.
 */
import { SignJWT } from "jose";
import { randomBytes } from "node:crypto";
import type { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { ACCESS_TOKEN_ALG, ACCESS_TOKEN_TYP, MAX_ACCESS_TOKEN_TTL_S, SERVICE_ROLE, tierClaim } from "../../platform/index.js";
import type { KeyStore } from "./key-store.js";

/** A minted token and when it expires. */
export interface IssuedToken {
  readonly token: string;
  readonly expiresAt: Date;
  /** The key that signed it. */
  readonly kid: string;
}

/** Options of `createTokenIssuer`. */
export interface TokenIssuerOptions {
  readonly keys: KeyStore;
  readonly issuer: string;
  readonly audience: string;
  /** Access-token lifetime in seconds, at most MAX_ACCESS_TOKEN_TTL_S. */
  readonly accessTtlS: number;
  /** The clock (tests); defaults to Date.now. */
  readonly now?: () => number;
}

/** Mints access tokens for users and services. */
export interface TokenIssuer {
  /** A user's access token carrying their tier and roles ("service" is always dropped). */
  issueUser(user: { id: string; tier: Tier; roles: readonly string[] }): Promise<IssuedToken>;
  /**
   * A service token: sub "service:<name>", roles ["service"], no tier.
   * `ttlS` defaults to the access-token lifetime; longer ones are for tokens
   * given to processes through AUTH_SERVICE_TOKEN (the key store keeps their
   * key published until they expire).
   */
  issueService(name: string, ttlS?: number): Promise<IssuedToken>;
}

/** Creates the issuer; throws RangeError if `accessTtlS` exceeds 15 minutes. */
export function createTokenIssuer(options: TokenIssuerOptions): TokenIssuer {
  if (options.accessTtlS < 1 || options.accessTtlS > MAX_ACCESS_TOKEN_TTL_S) {
    throw new RangeError(`access-token lifetime must be 1 to ${MAX_ACCESS_TOKEN_TTL_S} seconds`);
  }
  const now = options.now ?? Date.now;
  async function sign(sub: string, claims: Record<string, unknown>, ttlS: number): Promise<IssuedToken> {
    const { kid, privateKey } = options.keys.signer();
    const iat = Math.floor(now() / 1000);
    const exp = iat + ttlS;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: ACCESS_TOKEN_ALG, typ: ACCESS_TOKEN_TYP, kid })
      .setIssuer(options.issuer)
      .setAudience(options.audience)
      .setSubject(sub)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomBytes(12).toString("base64url"))
      .sign(privateKey);
    return { token, expiresAt: new Date(exp * 1000), kid };
  }
  return {
    issueUser: (user) =>
      sign(user.id, { tier: tierClaim(user.tier) ?? "free", roles: user.roles.filter((r) => r !== SERVICE_ROLE) }, options.accessTtlS),
    async issueService(name, ttlS = options.accessTtlS) {
      if (!/^[a-z][a-z0-9-]{0,31}$/.test(name)) throw new RangeError("service name must be 1 to 32 lowercase letters, digits or -");
      const issued = await sign(`service:${name}`, { roles: [SERVICE_ROLE] }, ttlS);
      if (ttlS > options.accessTtlS) await options.keys.extendPublication(issued.kid, issued.expiresAt);
      return issued;
    },
  };
}
