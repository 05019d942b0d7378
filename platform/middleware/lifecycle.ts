/**
 * Deadlines and shutdown, the same on every protocol path.
 *
 * - A call whose deadline has already passed is refused before it runs.
 * - Once shutdown begins, new calls are refused with UNAVAILABLE (clients
 *   retry elsewhere), unary calls in flight run to completion, and every open
 *   stream is ended with UNAVAILABLE so its client reconnects to another
 *   instance instead of waiting on one that is going away.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { isStreamResult, observeResult, type Middleware } from "../rpc/pipeline.js";

/** Calls in flight, so shutdown can wait for the unary ones to finish. */
export interface InFlight {
  /** Unary and client-streaming calls running now. */
  readonly unary: number;
  /** Resolves when no unary call is running. */
  idle(): Promise<void>;
}

/** Creates the lifecycle middleware around a shutdown signal. */
export function lifecycle(shutdown: AbortSignal): { middleware: Middleware; inFlight: InFlight } {
  let unary = 0;
  let waiters: (() => void)[] = [];
  const settle = () => {
    unary--;
    if (unary === 0) {
      for (const w of waiters) w();
      waiters = [];
    }
  };
  const middleware: Middleware = (_method, next) => (call) => {
    if (shutdown.aborted) throw unavailable();
    const remaining = call.ctx.timeoutMs();
    if (remaining !== undefined && remaining <= 0) {
      throw new ConnectError("the call's deadline passed before it started", Code.DeadlineExceeded);
    }
    const result = next(call);
    if (isStreamResult(result)) return endOnShutdown(result, shutdown);
    unary++;
    return observeResult(result, settle);
  };
  const inFlight: InFlight = {
    get unary() {
      return unary;
    },
    idle: () => (unary === 0 ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve))),
  };
  return { middleware, inFlight };
}

function unavailable(): ConnectError {
  return new ConnectError("the server is shutting down; retry on another instance", Code.Unavailable);
}

/** Passes a stream through until shutdown, then ends it with UNAVAILABLE. */
async function* endOnShutdown(stream: AsyncIterable<unknown>, shutdown: AbortSignal): AsyncIterable<unknown> {
  const it = stream[Symbol.asyncIterator]();
  let onAbort: () => void = () => {};
  const stopped = new Promise<never>((_, reject) => {
    onAbort = () => reject(unavailable());
    if (shutdown.aborted) onAbort();
    else shutdown.addEventListener("abort", onAbort, { once: true });
  });
  stopped.catch(() => undefined);
  try {
    for (;;) {
      const step = await Promise.race([it.next(), stopped]);
      if (step.done) return;
      yield step.value;
    }
  } finally {
    shutdown.removeEventListener("abort", onAbort);
    void it.return?.();
  }
}
