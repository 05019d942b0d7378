/**
 * Which MCP endpoints plugins may point at: only http(s) URLs on a host an
 * operator allowed (PLUGINS_ALLOWED_HOSTS). Checked when a plugin is listed
 * and again before every call, so a listing made before a host was removed
 * from the list cannot reach it.
 */

/** One allowed host: a lower-case name or address, and a port (undefined: any). */
export interface AllowedHost {
  readonly host: string;
  readonly port?: string;
}

/** Parses "host" or "host:port" (IPv6 in brackets); throws with a reason for anything else. */
export function parseAllowedHost(raw: string): AllowedHost {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(raw);
  if (m === null) throw new Error(`"${raw}" is not a host or host:port`);
  return m[2] === undefined ? { host: m[1]!.toLowerCase() } : { host: m[1]!.toLowerCase(), port: m[2] };
}

/**
 * Why `endpoint` may not be called, or undefined when it may: it must be an
 * http(s) URL without credentials whose host (and port, where one is listed)
 * is allowed.
 */
export function endpointRefusal(endpoint: string, allowed: readonly AllowedHost[]): string | undefined {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return `"${endpoint}" is not a URL`;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return `the MCP endpoint must be http(s), got ${url.protocol}`;
  if (url.username !== "" || url.password !== "") return "the MCP endpoint must not carry credentials";
  const host = url.hostname.toLowerCase();
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  const ok = allowed.some((a) => a.host === host && (a.port === undefined || a.port === port));
  return ok ? undefined : `the MCP endpoint's host ${url.host} is not in PLUGINS_ALLOWED_HOSTS`;
}
