/**
 * The billing service's variables: the Stripe account it talks to, the
 * price of each paid tier, where checkout may send people back to, and how
 * old a signed webhook may be.
 */
import { type ConfigOf, env, int, list, readConfig, url } from "../../platform/index.js";

/** An http(s) origin ("https://console.example.com"), without path. */
function origin(raw: string): string {
  const u = new URL(url("http", "https")(raw));
  if (u.origin !== raw.replace(/\/$/, "")) throw new Error(`expected an origin such as https://console.example.com (no path), got "${raw}"`);
  return u.origin;
}

/** A Stripe price id, e.g. price_1Pxyz. */
function priceId(raw: string): string {
  if (!/^price_[A-Za-z0-9_]{1,200}$/.test(raw)) throw new Error(`expected a Stripe price id (price_...), got "${raw}"`);
  return raw;
}

/** The billing variables, each with its description, parser and default (read at start by `readBillingSettings`). */
export const billingVars = {
  STRIPE_SECRET_KEY: env("Stripe secret API key (sk_live_... or sk_test_...); unset: billing's RPCs answer FAILED_PRECONDITION", (raw) => raw, "", true),
  STRIPE_WEBHOOK_SECRET: env("signing secret of the Stripe webhook endpoint /billing/webhook (whsec_...); unset: the webhook answers 503", (raw) => raw, "", true),
  STRIPE_API_BASE: env("Stripe API base URL; tests and local development point it at a local Stripe-compatible server", url("http", "https"), "https://api.stripe.com"),
  STRIPE_PRICE_PRO: env("Stripe price id (recurring) of the pro tier; unset: checkout of pro answers FAILED_PRECONDITION", priceId, ""),
  STRIPE_PRICE_POWER: env("Stripe price id (recurring) of the power tier", priceId, ""),
  STRIPE_PRICE_TEAM: env("Stripe price id (recurring) of the team tier", priceId, ""),
  BILLING_ALLOWED_REDIRECT_ORIGINS: env("origins checkout may send people back to (success and cancel URLs), comma-separated; empty: checkout answers FAILED_PRECONDITION", list(origin), []),
  BILLING_WEBHOOK_TOLERANCE_S: env("how old a webhook's signature timestamp may be, in seconds (replay window)", int(10, 3600), 300),
  BILLING_WEBHOOK_MAX_BYTES: env("largest webhook body accepted, in bytes (larger: 413)", int(1024, 16 * 1024 * 1024), 1024 * 1024),
};

/** The billing service's parsed variables. */
export type BillingSettings = ConfigOf<typeof billingVars>;

/** Reads the billing variables from `source`; throws ConfigError naming each bad one. */
export function readBillingSettings(source: NodeJS.ProcessEnv = process.env): BillingSettings {
  return readConfig(billingVars, source);
}
