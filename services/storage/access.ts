/**
 * Who a storage call acts for. A user acts only for themselves: a request
 * naming another user's id is answered as if nothing were there (NOT_FOUND),
 * so existence is never revealed. A service acts for exactly the user its
 * request names, and must name one.
 */
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { principalKey, SERVICE_ROLE } from "../../platform/index.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";

/** The user a call acts for, and what is known of the caller. */
export interface Acting {
  readonly userId: string;
  /** The tier from the caller's own token; undefined for a service (the stored tier applies). */
  readonly tier: Tier | undefined;
  /** Who called: the user id, or "service:<name>"; page tokens are bound to it. */
  readonly callerId: string;
}

/**
 * The user the call acts for, given the user id its request names ("" when
 * the request names none). `notFound` is the error a user naming another
 * user gets: the same one a missing resource gives.
 */
export function actingUser(ctx: HandlerContext, named: string, field: string, notFound: () => ConnectError): Acting {
  const p = ctx.values.get(principalKey);
  if (p === undefined) throw new ConnectError("this RPC needs an access token", Code.Unauthenticated);
  if (p.roles.includes(SERVICE_ROLE)) {
    if (named === "") throw new ConnectError(`${field}: a service must name the user it acts for ("users/{user_id}")`, Code.InvalidArgument);
    return { userId: named, tier: undefined, callerId: p.userId };
  }
  if (named !== "" && named !== p.userId) throw notFound();
  return { userId: p.userId, tier: p.tier === Tier.UNSPECIFIED ? Tier.FREE : p.tier, callerId: p.userId };
}

/** The user id of "users/{id}" (the contract checked the pattern), "" for "". */
export function parentUser(parent: string): string {
  return parent === "" ? "" : parent.slice("users/".length);
}

/** Splits "users/{user}/{kind}/{id}" (the contract checked the pattern). */
export function splitName(name: string): { userId: string; id: string } {
  const [, userId, , id] = name.split("/");
  return { userId: userId!, id: id! };
}
