/**
 * How NATS failures reach callers: a connection that is down, closed or
 * draining, a request that timed out, or JetStream not answering (no
 * responders, 503) is UNAVAILABLE, so an RPC that needs NATS answers at once
 * with a retryable code instead of hanging or answering INTERNAL.
 */
import { Code, ConnectError } from "@connectrpc/connect";

// Matched by name: the client's error classes are not all exported, and a
// second copy of the package would defeat instanceof.
const unavailableNames = new Set([
  "TimeoutError",
  "ConnectionError",
  "ClosedConnectionError",
  "DrainingConnectionError",
  "NoResponders",
  "JetStreamNotEnabled",
]);

/** Whether `err` means NATS (or JetStream) could not be reached in time. */
export function isNatsUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (unavailableNames.has(err.name)) return true;
  if (err.name === "JetStreamStatusError") {
    const code = (err as Error & { code?: number }).code;
    return code === 503 || code === 408;
  }
  if (err.name === "RequestError") return isNatsUnavailable(err.cause) || /timeout|no responders/i.test(err.message);
  return false;
}

/** Maps a NATS error to UNAVAILABLE (see the module comment); returns other errors unchanged. */
export function mapNatsError(err: unknown): unknown {
  if (err instanceof ConnectError || !isNatsUnavailable(err)) return err;
  return new ConnectError("the message bus is unavailable; retry shortly", Code.Unavailable, undefined, undefined, err);
}
