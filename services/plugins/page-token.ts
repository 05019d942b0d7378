/**
 * Opaque page tokens for ListPlugins, bound to the query and the caller that
 * made them: a token replayed with other filters, or by another user, is
 * refused instead of silently paging through another result.
 */
import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";

/** A fingerprint of everything that shapes a listing. */
export function queryFingerprint(parts: readonly unknown[]): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("base64url").slice(0, 16);
}

/** The token of the page that starts at `offset`. */
export function encodePageToken(offset: number, fingerprint: string): string {
  return Buffer.from(JSON.stringify({ o: offset, q: fingerprint })).toString("base64url");
}

/** The offset a token stands for (0 for none); INVALID_ARGUMENT for a malformed or foreign one. */
export function decodePageToken(token: string, fingerprint: string): number {
  if (token === "") return 0;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    parsed = undefined;
  }
  const p = parsed as { o?: unknown; q?: unknown } | undefined;
  if (typeof p?.o !== "number" || !Number.isSafeInteger(p.o) || p.o < 0 || typeof p.q !== "string") {
    throw new ConnectError("page_token: not a token this service issued; start again without one", Code.InvalidArgument);
  }
  if (p.q !== fingerprint) throw new ConnectError("page_token: it came from a listing with other filters (or another caller); start again without one", Code.InvalidArgument);
  return p.o;
}
