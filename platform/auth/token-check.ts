/**
 * The platform's token check: a middleware in front of every RPC of every
 * process. Each method's `(switchyard.options.v1.access)` option is read once,
 * when the chain is built:
 *
 * - ACCESS_PUBLIC: no check at all (the method's chain skips this middleware);
 * - unset: a valid user access token ("authorization: Bearer <token>");
 * - ACCESS_INTERNAL: a valid token whose roles include "service".
 *
 * The platform's own grpc.* services (health, reflection) are public: probes
 * and `buf curl` carry no tokens, and they reveal nothing about users.
 *
 * A verified caller is put in the context values under `principalKey`.
 */
import { getOption, hasOption, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Access, access as accessExt } from "../../gen/switchyard/options/v1/options_pb.js";
import { ConfigError } from "../config.js";
import { afterCheck, type Middleware, type RpcCall } from "../rpc/pipeline.js";
import { parseBearer } from "./bearer.js";
import { SERVICE_ROLE } from "./claims.js";
import { principalKey, type Principal } from "./principal.js";
import type { AccessTokenVerifier } from "./verifier.js";

/** Who may call `method`, as the contract says (builtin grpc.* services are public). */
export function accessOf(method: DescMethod): Access {
  if (method.parent.typeName.startsWith("grpc.")) return Access.PUBLIC;
  return hasOption(method, accessExt) ? getOption(method, accessExt) : Access.UNSPECIFIED;
}

/** Whether any method of `services` needs a token. */
export function needsTokens(services: readonly DescService[]): boolean {
  return services.some((s) => s.methods.some((m) => accessOf(m) !== Access.PUBLIC));
}

/** The bearer token of an authorization header; throws UNAUTHENTICATED when absent or malformed. */
export function bearerToken(header: string | null): string {
  const token = parseBearer(header);
  if (token === undefined) {
    throw new ConnectError(
      'this RPC needs an access token: send the header "authorization: Bearer <access_token>" (signing in returns one)',
      Code.Unauthenticated,
    );
  }
  if (token === null) throw new ConnectError('the authorization header must be "Bearer <access_token>"', Code.Unauthenticated);
  return token;
}

/**
 * Creates the token check. `verifier` may be undefined only if no served
 * method needs a token; otherwise this throws a ConfigError naming
 * AUTH_JWKS_URL, so the process stops at start instead of refusing every call.
 */
export function createTokenCheck(services: readonly DescService[], verifier: AccessTokenVerifier | undefined): Middleware {
  if (verifier === undefined && needsTokens(services)) {
    const names = services.filter((s) => needsTokens([s])).map((s) => s.typeName);
    throw new ConfigError([
      `AUTH_JWKS_URL is required: this process serves RPCs that need access tokens (${names.join(", ")}) ` +
        "but does not run the auth service, so it has no keys to check tokens with; set AUTH_JWKS_URL to auth's " +
        "http(s)://<auth host>:<port>/.well-known/jwks.json (or run auth in this process)",
    ]);
  }
  return (method, next) => {
    const access = accessOf(method);
    if (access === Access.PUBLIC) return next;
    const internal = access === Access.INTERNAL;
    const rpc = `${method.parent.typeName}/${method.name}`;
    const admit = (call: RpcCall, principal: Principal): void => {
      if (internal && !principal.roles.includes(SERVICE_ROLE)) {
        throw new ConnectError(`${rpc} is internal: only Switchyard services (a token with role "service") may call it`, Code.PermissionDenied);
      }
      call.ctx.values.set(principalKey, principal);
    };
    // A token verified before is decided at once (no promise, no microtask
    // hop): callers reuse their tokens, so this is nearly every call.
    const check = (call: RpcCall): Promise<void> | undefined => {
      const token = bearerToken(call.header("authorization"));
      const known = verifier!.cached(token);
      if (known !== undefined) return void admit(call, known);
      return verifier!.verify(token).then((principal) => admit(call, principal));
    };
    return afterCheck(method, check, next);
  };
}
