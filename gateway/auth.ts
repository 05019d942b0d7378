/**
 * Who is calling, for the gateway: the access-token verifier used on the
 * WebSocket upgrade and by `reauthenticate`, and the rules of who may act for
 * whom. Until platform/auth provides the shared verifier and the token-check
 * middleware, `createJwksVerifier` and `gatewayTokenCheck` stand in for them
 * (same claims: iss, aud, exp, typ at+jwt, sub, tier, roles).
 */
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { Tier } from "../gen/switchyard/common/v1/tier_pb.js";
import { principalKey, type Principal } from "../platform/auth/principal.js";
import type { Middleware } from "../platform/rpc/pipeline.js";

/** Verifies an access token; rejects with ConnectError UNAUTHENTICATED (message never contains the token). */
export type VerifyAccessToken = (token: string) => Promise<Principal>;

/** Where the verifier finds keys and what the tokens must say. */
export interface JwksVerifierOptions {
  readonly jwksUrl: string;
  readonly issuer: string;
  readonly audience: string;
}

const tierNames: Record<string, Tier> = { free: Tier.FREE, pro: Tier.PRO, power: Tier.POWER, team: Tier.TEAM };

/** A verifier against a remote JWKS (cached by jose, with a cooldown between refetches). */
export function createJwksVerifier(opts: JwksVerifierOptions): VerifyAccessToken {
  const keys = createRemoteJWKSet(new URL(opts.jwksUrl), { cooldownDuration: 30_000, cacheMaxAge: 600_000 });
  return async (token) => {
    if (token.length > 16_384) throw new ConnectError("access token too long", Code.Unauthenticated);
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: opts.issuer,
        audience: opts.audience,
        algorithms: ["EdDSA", "ES256", "RS256"],
        typ: "at+jwt",
        requiredClaims: ["sub", "exp"],
      });
      const rawTier = payload.tier;
      const tier = typeof rawTier === "number" ? (rawTier as Tier) : (tierNames[String(rawTier ?? "free").toLowerCase().replace(/^tier_/, "")] ?? Tier.FREE);
      const roles = Array.isArray(payload.roles) ? payload.roles.filter((r): r is string => typeof r === "string") : [];
      return { userId: payload.sub!, tier, roles, expiresAt: payload.exp! * 1000 };
    } catch (err) {
      const why = (err as { code?: string }).code === "ERR_JWT_EXPIRED" ? "the access token expired" : "invalid access token";
      throw new ConnectError(why, Code.Unauthenticated);
    }
  };
}

/** Whether the principal is another Switchyard service. */
export function isService(p: Principal): boolean {
  return p.roles.includes("service");
}

/** The verified caller of an RPC, or UNAUTHENTICATED. */
export function principalOf(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (p === undefined) throw new ConnectError("an access token is required", Code.Unauthenticated);
  return p;
}

/**
 * The user an RPC acts for: `requested` or, when empty, the caller. A service
 * must name the user; a user may name only themself.
 */
export function actingUser(p: Principal, requested: string): string {
  if (requested === "") {
    if (isService(p)) throw new ConnectError("user_id: is required when a service calls", Code.InvalidArgument);
    return p.userId;
  }
  if (!isService(p) && requested !== p.userId) throw new ConnectError("user_id: a user may act only for themself", Code.PermissionDenied);
  return requested;
}

/** Reads a Bearer token from an Authorization header value. */
export function bearerToken(header: string | null | undefined): string | undefined {
  const m = /^Bearer ([A-Za-z0-9_.~+/=-]+)$/i.exec(header?.trim() ?? "");
  return m?.[1];
}

/**
 * Stand-in for the platform token check, applied only to the named services:
 * verifies the Bearer token and sets the principal, unless an earlier
 * middleware already did. Missing or bad tokens answer UNAUTHENTICATED.
 */
export function gatewayTokenCheck(verify: VerifyAccessToken, serviceNames: readonly string[]): Middleware {
  return (method, next) => {
    if (!serviceNames.includes(method.parent.typeName)) return next;
    const streaming = method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";
    const check = async (ctx: HandlerContext) => {
      if (ctx.values.get(principalKey) !== undefined) return;
      const token = bearerToken(ctx.requestHeader.get("authorization"));
      if (token === undefined) throw new ConnectError("an access token is required", Code.Unauthenticated);
      ctx.values.set(principalKey, await verify(token));
    };
    if (!streaming) return async (call) => { await check(call.ctx); return next(call); };
    return (call) =>
      (async function* () {
        await check(call.ctx);
        yield* next(call) as AsyncIterable<unknown>;
      })();
  };
}
