/**
 * CORS for browsers that call the services directly (the HTTP/1.1 path:
 * gRPC-Web and Connect). Envoy applies the same origins at the edge; both
 * read ALLOWED_ORIGINS from here.
 *
 * Origins are echoed only when listed; "*" allows any origin and is then sent
 * as "*". Credentials (cookies) are never allowed: Switchyard's clients send
 * bearer tokens in a header, and a "*" with credentials would be refused by
 * browsers anyway.
 */
import { cors as connectCors } from "@connectrpc/connect";
import type { IncomingMessage, ServerResponse } from "node:http";
import { env, list, type EnvParser } from "./config.js";

/** Parses one allowed origin: "*" or scheme://host[:port] with nothing after. */
export const origin: EnvParser<string> = (raw) => {
  if (raw === "*") return raw;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new Error(`expected an origin like https://app.example.com, got "${raw}"`);
  }
  if (!/^https?:$/.test(u.protocol) || u.origin !== raw.replace(/\/$/, "")) {
    throw new Error(`expected an origin (http(s)://host[:port], no path), got "${raw}"`);
  }
  return u.origin;
};

/** The CORS variable, shared by the platform settings and the Envoy generator. */
export const corsVars = {
  ALLOWED_ORIGINS: env(
    'origins browsers may call from, comma-separated ("*" = any, without credentials)',
    list(origin),
    () => ["http://localhost:5173", "http://127.0.0.1:5173"],
  ),
};

/** Request headers a browser client may send: connect's list plus the bearer token. */
export const corsAllowedHeaders: readonly string[] = [...connectCors.allowedHeaders, "Authorization"];
/** Response headers a browser client may read (grpc-status, grpc-message, grpc-status-details-bin, ...). */
export const corsExposedHeaders: readonly string[] = [...connectCors.exposedHeaders];
/** Methods the RPC protocols use. */
export const corsAllowedMethods: readonly string[] = [...connectCors.allowedMethods];
/** How long a browser may cache a preflight answer, in seconds. */
export const corsMaxAgeSeconds = 7200;

/**
 * A CORS layer: adds the CORS response headers for an allowed origin and
 * answers preflights itself. Returns true when it answered the request (a
 * preflight: 204 for an allowed origin, 403 with no CORS headers otherwise).
 */
export type CorsLayer = (req: IncomingMessage, res: ServerResponse) => boolean;

/** Builds the CORS layer for `allowedOrigins` (see corsVars). */
export function createCors(allowedOrigins: readonly string[]): CorsLayer {
  const any = allowedOrigins.includes("*");
  const listed = new Set(allowedOrigins);
  const allowHeaders = corsAllowedHeaders.join(", ");
  const exposeHeaders = corsExposedHeaders.join(", ");
  const allowMethods = corsAllowedMethods.join(", ");
  return (req, res) => {
    const requestOrigin = req.headers.origin;
    const isPreflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
    if (requestOrigin === undefined) return false;
    const allowed = any || listed.has(requestOrigin);
    // Caches must not serve one origin's answer to another.
    if (!any) res.setHeader("vary", "Origin");
    if (!allowed) {
      if (!isPreflight) return false; // the browser withholds the response: no ACAO
      res.writeHead(403, { "content-type": "text/plain" });
      res.end(`origin ${requestOrigin} is not allowed\n`);
      return true;
    }
    res.setHeader("access-control-allow-origin", any ? "*" : requestOrigin);
    if (!isPreflight) {
      res.setHeader("access-control-expose-headers", exposeHeaders);
      return false;
    }
    res.writeHead(204, {
      "access-control-allow-methods": allowMethods,
      "access-control-allow-headers": allowHeaders,
      "access-control-max-age": String(corsMaxAgeSeconds),
      "content-length": "0",
    });
    res.end();
    return true;
  };
}
