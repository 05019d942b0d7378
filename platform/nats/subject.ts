/**
 * Subject tokens built from ids. NATS splits subjects on `.` and treats `*`
 * and `>` as wildcards, so an id such as `*` or `a.>` placed in a subject
 * would subscribe to (or publish on) other users' subjects. Every id that
 * becomes a subject token goes through `subjectToken` (checked: refused
 * unless it is a plain id) or `encodeSubjectToken` (any string, encoded).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ID_RULE, isId } from "../ids.js";

/** Whether `value` may be used as a subject token as it is: 1 to 64 of `A-Z a-z 0-9 _ -`. */
export function isSubjectToken(value: string): boolean {
  return isId(value);
}

/**
 * Returns `id` unchanged when it is 1 to 64 letters, digits, `_` or `-`;
 * otherwise throws ConnectError INVALID_ARGUMENT naming `what` (wildcards,
 * dots, whitespace, empty and overlong ids never reach a subject).
 */
export function subjectToken(id: string, what = "id"): string {
  if (isId(id)) return id;
  const shown = JSON.stringify(id.length > 70 ? `${id.slice(0, 64)}…` : id);
  throw new ConnectError(`${what} ${shown} cannot be used: it must be ${ID_RULE}`, Code.InvalidArgument);
}

/**
 * Encodes any non-empty string as a subject token (unpadded base64url of its
 * UTF-8 bytes), so it can never contain `.`, `*`, `>` or whitespace. Distinct
 * inputs give distinct tokens. Use it for values that are not plain ids
 * (emails, names); never mix encoded and raw tokens in one subject position.
 * Throws INVALID_ARGUMENT for an empty string.
 */
export function encodeSubjectToken(value: string, what = "value"): string {
  if (value === "") throw new ConnectError(`${what} must not be empty`, Code.InvalidArgument);
  return Buffer.from(value, "utf8").toString("base64url");
}

/** Reverses `encodeSubjectToken`. */
export function decodeSubjectToken(token: string): string {
  return Buffer.from(token, "base64url").toString("utf8");
}
