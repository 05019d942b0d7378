/**
 * `GET /.well-known/jwks.json`: the published public signing keys, for the
 * services' token check (AUTH_JWKS_URL) and Envoy's jwt_authn. Cacheable for
 * a few minutes: a new key is published long before it signs (see
 * key-store.ts), so a cached copy never misses a key in use.
 */
import { type HttpRoute, type RouteDeclaration, sendJson } from "../../platform/index.js";
import type { KeyStore } from "./key-store.js";

/** Seconds a JWKS response may be cached; well under the key pre-publication time. */
export const JWKS_MAX_AGE_S = 300;

/** The JWKS as the module declares it: public, cacheable, GET only. */
export const jwksRouteDeclaration: RouteDeclaration = { path: "/.well-known/jwks.json", methods: ["GET"], access: "public" };

/** The JWKS route over `keys`. */
export function jwksRoute(keys: KeyStore): HttpRoute {
  return {
    method: "GET",
    path: jwksRouteDeclaration.path,
    handle(_req, res) {
      sendJson(res, 200, keys.jwks(), {
        "content-type": "application/jwk-set+json",
        "cache-control": `public, max-age=${JWKS_MAX_AGE_S}, stale-while-revalidate=60`,
      });
    },
  };
}
