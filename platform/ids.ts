/**
 * The id rule, written once: user ids, instance ids, durable consumer names,
 * key ids and every id that becomes a NATS subject token are 1 to 64 ASCII
 * letters, digits, `_` or `-`. Such an id needs no escaping anywhere: not in
 * a subject (no `.`, `*`, `>`), a URL, a header or a log line.
 */

/** The rule as a pattern (anchored; no flags, so it is safe to share). */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** The rule as a person reads it, after "must be". */
export const ID_RULE = '1 to 64 letters, digits, "_" or "-"';

/** Every character the rule does not allow (global), e.g. to derive an id from a host name. */
export const NOT_ID_CHARACTERS = /[^A-Za-z0-9_-]/g;

/** Whether `value` obeys the id rule. */
export function isId(value: string): boolean {
  return ID_PATTERN.test(value);
}
