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

/**
 * Passes a stream through until shutdown, then ends it with UNAVAILABLE.
 *
 * Each step waits on a promise of its own that either the stream's next
 * message or the shutdown settles. Racing every `it.next()` against one
 * long-lived "stopped" promise instead (`Promise.race([it.next(), stopped])`)
 * leaves a reaction on that promise per message, each holding its message,
 * until shutdown: a leak of every message a long-lived stream carries (the
 * pattern of nodejs/node#17469).
 */
async function* endOnShutdown(stream: AsyncIterable<unknown>, shutdown: AbortSignal): AsyncIterable<unknown> {
  const it = stream[Symbol.asyncIterator]();
  let stopStep: ((err: ConnectError) => void) | undefined;
  const onAbort = () => stopStep?.(unavailable());
  shutdown.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      if (shutdown.aborted) throw unavailable();
      const step = await new Promise<IteratorResult<unknown>>((resolve, reject) => {
        stopStep = reject;
        it.next().then(resolve, reject);
      });
      stopStep = undefined;
      if (step.done) return;
      yield step.value;
    }
  } finally {
    stopStep = undefined;
    shutdown.removeEventListener("abort", onAbort);
    void it.return?.();
  }
}
