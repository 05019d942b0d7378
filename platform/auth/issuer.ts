/**
 * Who issues Switchyard's access tokens and for whom: the one definition of
 * AUTH_ISSUER and AUTH_AUDIENCE. Auth signs tokens with these `iss` and `aud`
 * claims, every service checks them, and the Envoy generator writes them into
 * jwt_authn, so the three can never disagree.
 */
import { env, readConfig, str, type ConfigOf } from "../config.js";

/** The token-issuer variables. */
export const issuerVars = {
  AUTH_ISSUER: env("the `iss` claim of access tokens (auth signs with it; services and Envoy require it)", str, "switchyard-auth"),
  AUTH_AUDIENCE: env("the `aud` claim of access tokens (auth signs with it; services and Envoy require it)", str, "switchyard"),
};

/** The parsed issuer settings. */
export type IssuerSettings = ConfigOf<typeof issuerVars>;

/** Reads AUTH_ISSUER and AUTH_AUDIENCE; throws ConfigError naming a bad one. */
export function readIssuerSettings(source: NodeJS.ProcessEnv = process.env): IssuerSettings {
  return readConfig(issuerVars, source);
}
