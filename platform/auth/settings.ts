/**
 * The variables the platform's token check reads in every process. They are
 * part of the platform settings (see ../settings.ts), so a test can give each
 * in-process server its own values.
 */
import { env, str, url } from "../config.js";

/** Token-check variables, spread into `platformVars`. */
export const authPlatformVars = {
  AUTH_ISSUER: env("the `iss` of access tokens: auth issues with it, every service requires it", str, "switchyard-auth"),
  AUTH_AUDIENCE: env("the `aud` of access tokens: auth issues with it, every service requires it", str, "switchyard"),
  AUTH_JWKS_URL: env(
    "where a process without the auth service fetches the signing keys, e.g. http://auth:8080/.well-known/jwks.json; " +
      "required when the process serves non-public RPCs and auth runs elsewhere",
    url("http", "https"),
    "",
  ),
  AUTH_SERVICE_TOKEN: env(
    "service token (roles: service) this process sends on internal calls when auth runs elsewhere; " +
      "mint one with `npm run auth:service-token -- <service>`",
    str,
    "",
    true,
  ),
};
