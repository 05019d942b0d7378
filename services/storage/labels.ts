/**
 * Label rules the contract states in words but its field rules cannot
 * express (key pattern, value length), checked before anything is written.
 */
import { Code, ConnectError } from "@connectrpc/connect";

const KEY = /^[a-z][a-z0-9_.-]{0,62}$/;
const MAX_VALUE = 256;

/** Throws INVALID_ARGUMENT naming `field` and the offending key when a label breaks the rules. */
export function checkLabels(labels: Readonly<Record<string, string>>, field: string): void {
  for (const [key, value] of Object.entries(labels)) {
    if (!KEY.test(key)) {
      const shown = key.length <= 64 && /^[\x20-\x7e]*$/.test(key) ? `"${key}"` : "a key";
      throw new ConnectError(`${field}: ${shown} is not a label key; keys match ^[a-z][a-z0-9_.-]{0,62}$`, Code.InvalidArgument);
    }
    if (value.length > MAX_VALUE) throw new ConnectError(`${field}["${key}"]: values are at most ${MAX_VALUE} characters, got ${value.length}`, Code.InvalidArgument);
  }
}

/** The labels as a plain object with sorted keys (for digests and fingerprints). */
export function sortedLabels(labels: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
