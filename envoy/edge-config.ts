/**
 * The values the generated edge files bake in, read from the environment at
 * generation time: the token issuer and audience (from the same definition
 * auth signs with), the allowed browser origins (the same as the platform's
 * CORS layer), the ports, the edge rate limit and optional TLS.
 */
import { env, int, readConfig, str } from "../platform/config.js";
import { corsVars } from "../platform/cors.js";
import { authPlatformVars } from "../platform/auth/settings.js";

/** The variables `npm run envoy` reads. */
export const edgeVars = {
  // The very declarations the platform's token check and auth's signing read.
  AUTH_ISSUER: authPlatformVars.AUTH_ISSUER,
  AUTH_AUDIENCE: authPlatformVars.AUTH_AUDIENCE,
  ...corsVars,
  EDGE_PORT: env("port Envoy listens on", int(1, 65535), 8080),
  EDGE_RATE_LIMIT_RPS: env("requests per second one Envoy lets through in all (a flood guard; per-user limits are the services')", int(1, 1_000_000), 1000),
  EDGE_TLS_CERT_FILE: env("PEM certificate chain for TLS at the edge, as a path inside the Envoy container; empty = plain HTTP", str, ""),
  EDGE_TLS_KEY_FILE: env("PEM private key for TLS at the edge, as a path inside the Envoy container", str, ""),
};

/** What the Envoy and compose generators need besides the topology. */
export interface EdgeConfig {
  readonly issuer: string;
  readonly audience: string;
  readonly allowedOrigins: readonly string[];
  readonly edgePort: number;
  /** The port every service container serves on. */
  readonly servicePort: number;
  readonly rateLimitPerSecond: number;
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
}

/** Reads the edge configuration; throws ConfigError naming a bad variable. */
export function readEdgeConfig(source: NodeJS.ProcessEnv = process.env): EdgeConfig {
  const c = readConfig(edgeVars, source);
  if ((c.EDGE_TLS_CERT_FILE === "") !== (c.EDGE_TLS_KEY_FILE === "")) {
    throw new Error("EDGE_TLS_CERT_FILE and EDGE_TLS_KEY_FILE must be set together");
  }
  return {
    issuer: c.AUTH_ISSUER,
    audience: c.AUTH_AUDIENCE,
    allowedOrigins: c.ALLOWED_ORIGINS,
    edgePort: c.EDGE_PORT,
    servicePort: 8080,
    rateLimitPerSecond: c.EDGE_RATE_LIMIT_RPS,
    ...(c.EDGE_TLS_CERT_FILE ? { tls: { certFile: c.EDGE_TLS_CERT_FILE, keyFile: c.EDGE_TLS_KEY_FILE } } : {}),
  };
}
