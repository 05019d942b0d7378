/**
 * The revenue split of a paid install, stated once: the publisher gets 70%
 * of the price, rounded down to a whole minor unit, and the platform the
 * rest, so the two always add up to the price exactly.
 */

/** The publisher's share of a paid install, in basis points (1/100 of a percent). */
export const PUBLISHER_SHARE_BASIS_POINTS = 7000n;

/** A price split into the publisher's and the platform's parts, in minor units. */
export interface RevenueSplit {
  readonly publisher: bigint;
  readonly platform: bigint;
}

/** Splits `priceMinorUnits` (> 0); integer arithmetic only, so nothing drifts. */
export function splitRevenue(priceMinorUnits: bigint): RevenueSplit {
  if (priceMinorUnits <= 0n) throw new RangeError("only a paid install has revenue to split");
  const publisher = (priceMinorUnits * PUBLISHER_SHARE_BASIS_POINTS) / 10_000n;
  return { publisher, platform: priceMinorUnits - publisher };
}
