/**
 * The one reading of an `Authorization: Bearer <token>` header, used by the
 * RPC token check and by WebSocket upgrades alike, so a header is accepted or
 * refused the same way on every path. The grammar is RFC 6750's (the scheme
 * in any case, one or more spaces, a b64token), with surrounding spaces
 * ignored: `Bearer  x` is the same credential everywhere.
 */

const bearer = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i;

/**
 * The token of an Authorization header value: undefined when there is no
 * header (or it is empty), null when it is not "Bearer <token>".
 */
export function parseBearer(header: string | null | undefined): string | null | undefined {
  const value = header?.trim() ?? "";
  if (value === "") return undefined;
  return bearer.exec(value)?.[1] ?? null;
}
