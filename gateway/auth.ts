/**
 * Who is calling, for the gateway: the verifier type used on the WebSocket
 * upgrade and by `reauthenticate` (the platform's, from ctx.auth), and the
 * rules of who may act for whom. RPCs get their principal from the platform
 * token check.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { type Principal, SERVICE_ROLE } from "../platform/index.js";

/** Verifies an access token; rejects with ConnectError UNAUTHENTICATED (message never contains the token). */
export type VerifyAccessToken = (token: string) => Promise<Principal>;

/** Whether the principal is another Switchyard service. */
export function isService(p: Principal): boolean {
  return p.roles.includes(SERVICE_ROLE);
}

export { principalOf } from "../platform/auth/principal.js";

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
