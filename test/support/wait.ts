/**
 * The one polling helper of the tests: waits for a condition, never for a
 * guessed amount of time. `ms` bounds a wait that would otherwise hang (it is
 * generous on purpose: a loaded machine only makes it longer, never fails it);
 * each wait ends as soon as its condition holds.
 */

/** Truthy results of `check`. */
export type Found<T> = Exclude<T, undefined | null | false | 0 | "">;

/**
 * Polls `check` every `everyMs` until it returns a truthy value, which it
 * resolves with; an error thrown by `check` counts as "not yet". Rejects
 * naming `what` (and the last error) after `ms`.
 */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, ms = 20_000, everyMs = 50): Promise<Found<T>> {
  const until = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as Found<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
