/**
 * When a failed call may be tried again: gRPC's retry policy and retry
 * throttling (gRFC A6), kept per target.
 *
 * - Only UNAVAILABLE is retried (the call did not run, or the server asked
 *   the caller to go elsewhere), and only for methods whose proto declares
 *   `idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT: running those twice is
 *   harmless, running anything else twice is not ours to decide.
 * - A budget stops retries from multiplying load on a target that is
 *   failing: it starts full at `maxTokens`; each UNAVAILABLE takes one token,
 *   each success gives back `tokenRatio`; retries are allowed only while more
 *   than half the tokens remain. A target failing every call therefore gets at
 *   most about maxTokens/2 retries before the caller stops retrying, and
 *   retries resume once successes have refilled the budget.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";

/** A target's retry budget. */
export interface RetryBudget {
  /** Records the outcome of one attempt (OK or any code). */
  record(code: Code | undefined): void;
  /** Whether attempt `attempt` (1-based) of `method`, which failed with `code`, may be retried now. */
  mayRetry(method: DescMethod, code: Code, attempt: number): boolean;
  /** Milliseconds to wait before attempt `attempt + 1` (jittered exponential backoff). */
  backoffMs(attempt: number): number;
}

/** Budget settings; defaults follow gRPC's examples. */
export interface RetryBudgetOptions {
  /** Tokens when full (default 10). */
  readonly maxTokens?: number;
  /** Tokens a success gives back (default 0.1). */
  readonly tokenRatio?: number;
  /** Attempts per call, the first included (default 3). */
  readonly maxAttempts?: number;
  /** First backoff in milliseconds (default 20); doubles, capped at 1000, full jitter. */
  readonly initialBackoffMs?: number;
}

/** Whether the proto says running `method` twice is harmless. */
export function isRetrySafe(method: DescMethod): boolean {
  return (
    method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS ||
    method.idempotency === MethodOptions_IdempotencyLevel.IDEMPOTENT
  );
}

/** Creates a full budget. */
export function createRetryBudget(options: RetryBudgetOptions = {}): RetryBudget {
  const maxTokens = options.maxTokens ?? 10;
  const tokenRatio = options.tokenRatio ?? 0.1;
  const maxAttempts = options.maxAttempts ?? 3;
  const initialBackoffMs = options.initialBackoffMs ?? 20;
  let tokens = maxTokens;
  return {
    record(code) {
      if (code === undefined) tokens = Math.min(maxTokens, tokens + tokenRatio);
      else if (code === Code.Unavailable) tokens = Math.max(0, tokens - 1);
    },
    mayRetry(method, code, attempt) {
      return code === Code.Unavailable && attempt < maxAttempts && isRetrySafe(method) && tokens > maxTokens / 2;
    },
    backoffMs(attempt) {
      return Math.random() * Math.min(1000, initialBackoffMs * 2 ** (attempt - 1));
    },
  };
}
