/**
 * The address of the client behind a call, for per-address limits (login
 * throttling). The transports put the TCP peer's address in the context
 * values under `peerAddressKey`; `x-forwarded-for` is believed only as far as
 * the operator says proxies are trusted, because any client can send one.
 */
import { createContextKey, type HandlerContext } from "@connectrpc/connect";

/** The TCP peer's address (no port), set by both protocol paths; undefined if unknown. */
export const peerAddressKey = createContextKey<string | undefined>(undefined, { description: "peer address" });

/** "::ffff:1.2.3.4" (an IPv4 client of a dual-stack listener) is 1.2.3.4, as proxies write it. */
function normalize(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/**
 * The client's address. With `trustedProxyHops` = 0 it is the TCP peer. With
 * n > 0 (n trusted proxies, e.g. 1 for Envoy, which appends the address it
 * saw), it is the n-th entry of `x-forwarded-for` counted from the right; the
 * entries left of it are the client's own claims and are ignored. Falls back
 * to the peer when the header has fewer entries. "unknown" when nothing is known.
 */
export function clientAddress(ctx: HandlerContext, trustedProxyHops: number): string {
  const peer = ctx.values.get(peerAddressKey);
  if (trustedProxyHops > 0) {
    const xff = ctx.requestHeader.get("x-forwarded-for");
    if (xff !== null) {
      const hops = xff.split(",").map((s) => s.trim()).filter((s) => s !== "");
      const entry = hops[hops.length - trustedProxyHops];
      if (entry !== undefined && entry.length <= 64) return normalize(entry);
    }
  }
  return peer === undefined ? "unknown" : normalize(peer);
}
