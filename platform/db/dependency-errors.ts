/**
 * Middleware mapping failures of the process's dependencies, wherever a
 * handler met them (`db.sql` used directly, a NATS request), to the codes a
 * client can act on: database or NATS unreachable → UNAVAILABLE, a value
 * PostgreSQL cannot store → INVALID_ARGUMENT (see db/errors.ts and
 * nats/errors.ts). Other errors pass unchanged.
 */
import { isStreamResult, type Middleware } from "../rpc/pipeline.js";
import { mapNatsError } from "../nats/errors.js";
import { mapDatabaseError } from "./errors.js";

function map(err: unknown): unknown {
  const mapped = mapDatabaseError(err);
  return mapped === err ? mapNatsError(err) : mapped;
}

/** Creates the middleware. */
export function dependencyErrors(): Middleware {
  return (_method, next) => (call) => {
    const result = next(call);
    if (!isStreamResult(result)) {
      return result.catch((err: unknown) => {
        throw map(err);
      });
    }
    return (async function* () {
      try {
        yield* result;
      } catch (err) {
        throw map(err);
      }
    })();
  };
}
