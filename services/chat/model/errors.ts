/**
 * Provider failures as gRPC codes. Both SDKs report HTTP failures with a status
 * and the response headers; the adapters reduce theirs to a `ProviderFailure`
 * and this module decides the code and a message a person can act on.
 *
 * The rule that matters most: the provider refusing OUR key (401/403) is the
 * operator's misconfiguration, answered FAILED_PRECONDITION, never
 * UNAUTHENTICATED (which would tell the user to sign in again).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";

/** What went wrong with one provider call, in SDK-neutral terms. */
export type ProviderFailure =
  /** The provider answered with an HTTP error status. */
  | { readonly kind: "status"; readonly status: number; readonly headers?: Headers; readonly detail: string }
  /** The provider reported an error inside an otherwise good stream (an SSE `error` event). */
  | { readonly kind: "stream-error"; readonly detail: string }
  /** No connection, a reset, or no response headers in time. */
  | { readonly kind: "connection"; readonly detail: string }
  /** A chunk that is not the JSON the wire format promises. */
  | { readonly kind: "malformed"; readonly detail: string }
  /** The stream ended before the provider said the reply was finished. */
  | { readonly kind: "truncated" }
  /** Nothing arrived for the stall timeout. */
  | { readonly kind: "stall"; readonly stallMs: number };

/** Which provider a failure came from, for messages. */
export interface ProviderLabel {
  readonly provider: "openai" | "anthropic";
  readonly model: string;
}

/** The ConnectError a caller of the model layer sees for `failure`. */
export function providerError(failure: ProviderFailure, label: ProviderLabel): ConnectError {
  const who = `the model provider (${label.provider}, model ${label.model})`;
  switch (failure.kind) {
    case "status":
      return statusError(failure.status, failure.headers, failure.detail, who, label);
    case "stream-error":
      return new ConnectError(`${who} failed mid-answer: ${failure.detail}; try again`, Code.Unavailable);
    case "connection":
      return new ConnectError(`${who} could not be reached: ${failure.detail}; try again`, Code.Unavailable);
    case "malformed":
      return new ConnectError(`${who} sent a malformed stream chunk (${failure.detail}); try again`, Code.Unavailable);
    case "truncated":
      return new ConnectError(`${who} ended its stream before finishing the answer; try again`, Code.Unavailable);
    case "stall":
      return new ConnectError(`${who} sent nothing for ${failure.stallMs} ms (LLM_STALL_TIMEOUT_MS); try again`, Code.Unavailable);
  }
}

function statusError(status: number, headers: Headers | undefined, detail: string, who: string, label: ProviderLabel): ConnectError {
  const said = detail === "" ? "" : `: ${detail}`;
  if (status === 401 || status === 403) {
    return new ConnectError(
      // The provider's own text is left out: OpenAI's echoes part of the key.
      `${who} refused our credentials (HTTP ${status}); the operator must check LLM_API_KEY (and LLM_BASE_URL)`,
      Code.FailedPrecondition,
    );
  }
  if (status === 404) {
    return new ConnectError(
      `${who} answered HTTP 404${said}; the operator must check LLM_MODEL ("${label.model}") and LLM_BASE_URL`,
      Code.FailedPrecondition,
    );
  }
  if (status === 429) {
    const ms = retryDelayMs(headers);
    const when = ms === undefined ? "retry later" : `retry in ${(ms / 1000).toFixed(1)} s`;
    const details = ms === undefined ? [] : [retryInfo(ms)];
    return new ConnectError(`${who} is rate limiting us (HTTP 429)${said}; ${when}`, Code.ResourceExhausted, undefined, details);
  }
  if (status === 400 || status === 413 || status === 422) {
    return new ConnectError(`${who} refused the request (HTTP ${status})${said}`, Code.InvalidArgument);
  }
  if (status === 408 || status === 409 || status >= 500) {
    return new ConnectError(`${who} is unavailable (HTTP ${status})${said}; try again`, Code.Unavailable);
  }
  return new ConnectError(`${who} answered HTTP ${status}${said}`, Code.Internal);
}

/** A google.rpc.RetryInfo detail, as the platform's rate limit attaches it. */
function retryInfo(ms: number) {
  return {
    desc: RetryInfoSchema,
    value: { retryDelay: { seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.round(ms % 1000) * 1_000_000 } },
  };
}

/**
 * How long the provider asks us to wait, in ms: OpenAI's `retry-after-ms`,
 * else `retry-after` as seconds or an HTTP date; undefined when neither says.
 */
export function retryDelayMs(headers: Headers | undefined, now = Date.now()): number | undefined {
  if (headers === undefined) return undefined;
  const ms = Number.parseFloat(headers.get("retry-after-ms") ?? "");
  if (Number.isFinite(ms) && ms >= 0) return Math.ceil(ms);
  const raw = headers.get("retry-after")?.trim();
  if (raw === undefined || raw === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(raw)) return Math.ceil(Number(raw) * 1000);
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The error a model call answers when its caller aborted: the caller's own ConnectError reason, else CANCELED. */
export function cancelledError(signal: AbortSignal): ConnectError {
  if (signal.reason instanceof ConnectError) return signal.reason;
  return new ConnectError("the model call was cancelled", Code.Canceled);
}
