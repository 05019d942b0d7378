/**
 * The billing service: Stripe subscriptions that set a user's tier. Checkout
 * and cancellation go to Stripe through its official SDK; Stripe's webhook
 * (`POST /billing/webhook`) tells billing what happened; every tier change is
 * published as TierChanged (auth puts it in the user's next token) and every
 * subscription change as SubscriptionChanged, through the outbox.
 */
import { BillingService } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import type { ServiceModule } from "../../platform/index.js";
import { createBillingHandlers } from "./handlers.js";
import { billingVars, readBillingSettings } from "./settings.js";
import { createStripeClient } from "./stripe-client.js";
import { createSubscriptionSync } from "./sync.js";
import { createWebhookRoute, webhookRouteDeclaration } from "./webhook-route.js";

/** The billing module, reading its variables (see settings.ts) from `source` at start; tests pass their own. */
export function createBillingModule(source: NodeJS.ProcessEnv = process.env): ServiceModule {
  return {
    name: "billing",
    settings: billingVars,
    summary: "Stripe checkout (subscription mode), signed webhooks applied once and in order, GetSubscription / CancelSubscription; tier changes published as `TierChanged`",
    serves: [BillingService],
    routes: [webhookRouteDeclaration],
    migrations: new URL("./migrations/", import.meta.url),
    uses: ["db", "events"],
    start(ctx) {
      const s = readBillingSettings(source);
      const { db, events, log } = ctx;
      const prices = new Map<Tier, string>(
        (
          [
            [Tier.PRO, s.STRIPE_PRICE_PRO],
            [Tier.POWER, s.STRIPE_PRICE_POWER],
            [Tier.TEAM, s.STRIPE_PRICE_TEAM],
          ] as const
        ).filter(([, price]) => price !== ""),
      );
      const tiersByPrice = new Map([...prices].map(([tier, price]) => [price, tier]));
      const stripe = s.STRIPE_SECRET_KEY ? createStripeClient(s.STRIPE_SECRET_KEY, s.STRIPE_API_BASE) : undefined;
      if (!stripe) log.warn("billing runs unconfigured: STRIPE_SECRET_KEY is unset, so its RPCs answer FAILED_PRECONDITION");
      const sync = stripe ? createSubscriptionSync({ db, events, stripe, tierOfPrice: (p) => tiersByPrice.get(p), log }) : undefined;
      return {
        services: [createBillingHandlers({ db, stripe, sync, prices, allowedRedirectOrigins: s.BILLING_ALLOWED_REDIRECT_ORIGINS })],
        routes: [
          createWebhookRoute({
            db,
            log,
            sync,
            webhookSecret: s.STRIPE_WEBHOOK_SECRET,
            toleranceS: s.BILLING_WEBHOOK_TOLERANCE_S,
            maxBytes: s.BILLING_WEBHOOK_MAX_BYTES,
          }),
        ],
      };
    },
  };
}

/** The billing module as `npm start` runs it, configured from the environment. */
export const billing: ServiceModule = createBillingModule();
