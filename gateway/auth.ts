/**
 * Who is calling, for the gateway: the verifier type used on the WebSocket
 * upgrade and by `reauthenticate` (the platform's, from ctx.auth), and the
 * rules of who may act for whom. RPCs get their principal from the platform
 * token check.
 */
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { type Principal, principalKey, SERVICE_ROLE } from "../platform/index.js";

/** Verifies an access token; rejects with ConnectError UNAUTHENTICATED (message never contains the token). */
export type VerifyAccessToken = (token: string) => Promise<Principal>;

/** Whether the principal is another Switchyard service. */
export function isService(p: Principal): boolean {
  return p.roles.includes(SERVICE_ROLE);
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
