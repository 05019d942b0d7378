/**
 * How database failures reach callers. A lost connection or a server that is
 * down, starting or shutting down is UNAVAILABLE (the client may retry); a
 * value PostgreSQL refuses to store (a NUL character, a string over a column's
 * length) is INVALID_ARGUMENT; everything else stays as it is (INTERNAL).
 * Messages never carry the SQL or the server's wording.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Error codes of `postgres` and Node sockets meaning "no usable connection". */
const connectionCodes = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/**
 * SQLSTATEs meaning the server cannot serve now: class 08, shutdown, starting
 * up, too many connections, and a read-only server (25006: a standby not yet
 * promoted during a failover).
 */
function unavailableState(state: string): boolean {
  return state.startsWith("08") || state === "57P01" || state === "57P02" || state === "57P03" || state === "53300" || state === "25006";
}

/** SQLSTATEs meaning the value itself is unstorable: NUL/bad encoding, too long, out of range. */
const invalidStates = new Map([
  ["22021", "a text value contains a NUL character or invalid UTF-8"],
  ["22P05", "a text value contains a character the database cannot store"],
  ["22001", "a value is longer than its field allows"],
  ["22003", "a number is out of range"],
  ["54000", "a value is too large to store"],
]);

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** Whether `err` means the database could not be reached or is not serving. */
export function isDatabaseUnavailable(err: unknown): boolean {
  const code = codeOf(err);
  if (code === undefined) return false;
  return connectionCodes.has(code) || unavailableState(code);
}

/**
 * Maps a database error to the ConnectError a caller should see (see the
 * module comment); returns `err` unchanged when it is not one of ours to map.
 */
export function mapDatabaseError(err: unknown): unknown {
  if (err instanceof ConnectError) return err;
  if (isDatabaseUnavailable(err)) {
    return new ConnectError("the database is unavailable; retry shortly", Code.Unavailable, undefined, undefined, err);
  }
  const code = codeOf(err);
  const invalid = code === undefined ? undefined : invalidStates.get(code);
  if (invalid !== undefined) return new ConnectError(invalid, Code.InvalidArgument, undefined, undefined, err);
  return err;
}
