/**
 * Who is calling: set by the platform's token check on every RPC that is not
 * public, read by handlers with `ctx.values.get(principalKey)`.
 */
import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";

/** The verified caller of an RPC. */
export interface Principal {
  /** The user id (`sub` of the access token). */
  readonly userId: string;
  readonly tier: Tier;
  /** Roles from the token; "service" marks another Switchyard service. */
  readonly roles: readonly string[];
  /** When the access token expires (epoch ms). */
  readonly expiresAt: number;
}

/** Context key holding the Principal; undefined on public RPCs called without a token. */
export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "principal" });

/**
 * The verified caller of an RPC. Throws UNAUTHENTICATED when there is none,
 * which happens only on a public RPC called without a token.
 */
export function principalOf(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (p === undefined) throw new ConnectError('this RPC needs an access token: send "authorization: Bearer <access_token>"', Code.Unauthenticated);
  return p;
}
