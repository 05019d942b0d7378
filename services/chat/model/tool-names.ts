/**
 * Provider-safe tool names. OpenAI and Anthropic accept only ^[a-zA-Z0-9_-]{1,64}$,
 * while our tool names (e.g. "plugin.search/v2") may hold any character; chat
 * maps them before a call and maps the model's calls back.
 */
import { createHash } from "node:crypto";

const MAX_LENGTH = 64;
const SUFFIX_LENGTH = 8;

/** The pattern both providers accept for a tool name. */
export const PROVIDER_SAFE_TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * Maps each original name to a provider-safe name, distinct across `names`.
 * Safe names stay as they are; others have each illegal character replaced by
 * "_", are cut to fit, and carry a short hash of the original so two names that
 * clean up alike ("a.b", "a/b") never collide. Deterministic: the same names
 * map the same way on every call (a name's hash depends on the name alone; only
 * the rare collision between hashes depends on the other names), so a
 * conversation's history stays valid from turn to turn.
 */
export function providerSafeToolNames(names: readonly string[]): Map<string, string> {
  const result = new Map<string, string>();
  const taken = new Set<string>();
  const unique = [...new Set(names)];
  // Names that are already safe keep themselves first, so a cleaned-up name never takes theirs.
  for (const name of unique) {
    if (PROVIDER_SAFE_TOOL_NAME.test(name)) {
      result.set(name, name);
      taken.add(name);
    }
  }
  for (const name of unique) {
    if (result.has(name)) continue;
    let safe = withHash(cleaned(name), name, 0);
    for (let attempt = 1; taken.has(safe); attempt++) safe = withHash(cleaned(name), name, attempt);
    result.set(name, safe);
    taken.add(safe);
  }
  return result;
}

/** The name with illegal characters replaced, or "tool" when nothing legal is left. */
function cleaned(name: string): string {
  const replaced = name.replace(/[^a-zA-Z0-9_-]/g, "_");
  return /[a-zA-Z0-9]/.test(replaced) ? replaced : "tool";
}

/** `base` cut to fit and suffixed with a hash of the original (and attempt, on the rare collision). */
function withHash(base: string, original: string, attempt: number): string {
  const hash = createHash("sha256").update(`${original}\u0000${attempt}`).digest("hex").slice(0, SUFFIX_LENGTH);
  return `${base.slice(0, MAX_LENGTH - SUFFIX_LENGTH - 1)}_${hash}`;
}
