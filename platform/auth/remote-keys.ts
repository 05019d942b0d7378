/**
 * The signing keys of a process that does not run the auth service: auth's
 * JWKS fetched over HTTP, cached, refetched when a token names an unknown
 * `kid` (at most once per cooldown, so a flood of made-up kids cannot turn
 * into a flood of fetches).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { createRemoteJWKSet, errors, type JWTVerifyGetKey } from "jose";

/** Options of `createRemoteKeys`; the defaults suit auth's rotation (keys pre-published well ahead). */
export interface RemoteKeysOptions {
  /** How long a fetched key set is used before it is fetched again, in ms (default 10 min). */
  readonly cacheMaxAgeMs?: number;
  /** Least time between two fetches caused by unknown kids, in ms (default 30 s). */
  readonly cooldownMs?: number;
  /** Time allowed for one fetch, in ms (default 5 s). */
  readonly timeoutMs?: number;
}

/**
 * A key lookup over the JWKS at `url`. An unknown kid rejects with jose's
 * JWKSNoMatchingKey (the verifier answers UNAUTHENTICATED); a fetch that fails
 * rejects with UNAVAILABLE naming AUTH_JWKS_URL, since the token may be fine.
 */
export function createRemoteKeys(url: string, options: RemoteKeysOptions = {}): JWTVerifyGetKey {
  const jwks = createRemoteJWKSet(new URL(url), {
    cacheMaxAge: options.cacheMaxAgeMs ?? 10 * 60_000,
    cooldownDuration: options.cooldownMs ?? 30_000,
    timeoutDuration: options.timeoutMs ?? 5_000,
  });
  return async (header, token) => {
    try {
      return await jwks(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      throw new ConnectError(
        `the signing keys could not be fetched from AUTH_JWKS_URL (${url}) right now; retry shortly`,
        Code.Unavailable,
        undefined,
        undefined,
        err,
      );
    }
  };
}
