/**
 * The watchdog around one provider stream: a stall timer (no chunk for
 * LLM_STALL_TIMEOUT_MS aborts the request), the caller's abort, and every
 * other failure classified by the adapter and mapped to a gRPC code.
 */
import { ConnectError } from "@connectrpc/connect";
import { cancelledError, type ProviderFailure, type ProviderLabel, providerError } from "./errors.js";

/** How a guarded stream watches its provider. */
export interface GuardOptions {
  /** The caller's signal: aborting it cancels the request (the stream throws CANCELED or the signal's ConnectError reason). */
  readonly signal: AbortSignal;
  readonly stallMs: number;
  readonly label: ProviderLabel;
  /** The adapter's reading of an SDK error. */
  readonly classify: (err: unknown) => ProviderFailure;
}

/**
 * Yields the items of the stream `open` starts, with the SDK request bound to
 * an inner signal that the caller's abort and the stall timer both fire. The
 * stall timer runs only while we wait on the provider, not while our consumer
 * holds an item (a slow client's backpressure is not the provider stalling).
 */
export async function* guardStream<T>(
  open: (signal: AbortSignal) => Promise<AsyncIterable<T>>,
  options: GuardOptions,
): AsyncGenerator<T, void, undefined> {
  const { signal, stallMs, label } = options;
  if (signal.aborted) throw cancelledError(signal);
  const inner = new AbortController();
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => {
      stalled = true;
      inner.abort();
    }, stallMs);
  };
  const disarm = () => clearTimeout(timer);
  const onAbort = () => inner.abort();
  signal.addEventListener("abort", onAbort, { once: true });
  // Both SDKs end a stream quietly when their signal fires; these checks turn that into the right error.
  const interrupted = () => (signal.aborted ? cancelledError(signal) : stalled ? providerError({ kind: "stall", stallMs }, label) : undefined);
  try {
    arm();
    const items = await open(inner.signal);
    for await (const item of items) {
      disarm();
      yield item;
      arm();
    }
    disarm();
    const error = interrupted();
    if (error !== undefined) throw error;
  } catch (err) {
    const error = interrupted();
    if (error !== undefined) throw error;
    if (err instanceof ConnectError) throw err;
    throw providerError(options.classify(err), label);
  } finally {
    disarm();
    signal.removeEventListener("abort", onAbort);
    // A consumer that stops early must not leave the HTTP request open.
    inner.abort();
  }
}
