/**
 * The Stripe SDK as billing uses it: one client for the configured account,
 * pointed at STRIPE_API_BASE (Stripe itself, or a local Stripe-compatible
 * server in tests), and Stripe's errors turned into gRPC codes a caller can
 * act on.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import Stripe from "stripe";

/** Retries the SDK makes on connection errors, 409s and 5xx (each with the same Idempotency-Key). */
const NETWORK_RETRIES = 2;
/** How long one Stripe request may take, ms. */
const REQUEST_TIMEOUT_MS = 10_000;

/** A Stripe client for `secretKey` at `apiBase` (e.g. https://api.stripe.com or http://127.0.0.1:12111). */
export function createStripeClient(secretKey: string, apiBase: string): Stripe {
  const u = new URL(apiBase);
  const protocol = u.protocol === "http:" ? "http" : "https";
  return new Stripe(secretKey, {
    host: u.hostname,
    port: Number(u.port || (protocol === "http" ? 80 : 443)),
    protocol,
    maxNetworkRetries: NETWORK_RETRIES,
    timeout: REQUEST_TIMEOUT_MS,
    telemetry: false,
  });
}

/** The error billing answers when STRIPE_SECRET_KEY is unset. */
export function notConfigured(): ConnectError {
  return new ConnectError("billing is not configured: set STRIPE_SECRET_KEY (and STRIPE_WEBHOOK_SECRET, STRIPE_PRICE_*) to use it", Code.FailedPrecondition);
}

/** Whether `err` says Stripe could not be reached or was overloaded (worth retrying later). */
export function isStripeUnavailable(err: unknown): boolean {
  const type = (err as { type?: string }).type;
  return type === "StripeConnectionError" || type === "StripeAPIError" || type === "StripeRateLimitError";
}

/** A ConnectError for an error thrown by the Stripe SDK (anything else passes through unchanged). */
export function fromStripeError(err: unknown): unknown {
  if (!(err instanceof Stripe.errors.StripeError)) return err;
  if (isStripeUnavailable(err)) return new ConnectError(`the payment provider is unavailable (${err.message}); retry later`, Code.Unavailable);
  if (err.type === "StripeAuthenticationError" || err.type === "StripePermissionError") {
    return new ConnectError("the payment provider refused billing's API key: check STRIPE_SECRET_KEY", Code.FailedPrecondition);
  }
  if (err.type === "StripeIdempotencyError") return new ConnectError(`the payment provider refused a reused idempotency key: ${err.message}`, Code.AlreadyExists);
  if (err.type === "StripeInvalidRequestError") return new ConnectError(`the payment provider refused the request: ${err.message}`, Code.FailedPrecondition);
  return new ConnectError(`the payment provider failed: ${err.message}`, Code.Internal);
}
