/**
 * The BillingService RPCs. Request rules (required fields, URL and id
 * formats) are checked by the platform from the contract before these run;
 * what is checked here is what the contract cannot say: who may act for
 * whom, which tiers have prices, which origins checkout may return to.
 */
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type Stripe from "stripe";
import {
  BillingService,
  CancelSubscriptionResponseSchema,
  ChangeTierResponseSchema,
  CreateCheckoutResponseSchema,
  SubscriptionSchema,
  SubscriptionStatus,
  type Subscription,
} from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { type Database, type Principal, principalKey, register, SERVICE_ROLE, type ServiceRegistration, tierClaim } from "../../platform/index.js";
import { findAnswer, findCustomerId, findSubscription, saveAnswer, saveCustomerId, type StoredSubscription } from "./store.js";
import { fromStripeError, notConfigured } from "./stripe-client.js";
import { isPaidStatus } from "./subscription-state.js";
import type { SubscriptionSync } from "./sync.js";

/** What the handlers are built from; `stripe` and `sync` are absent while STRIPE_SECRET_KEY is unset. */
export interface BillingHandlerDeps {
  readonly db: Database;
  readonly stripe: Stripe | undefined;
  readonly sync: SubscriptionSync | undefined;
  /** The Stripe price of each paid tier that has one. */
  readonly prices: ReadonlyMap<Tier, string>;
  /** Origins checkout may send people back to. */
  readonly allowedRedirectOrigins: readonly string[];
}

const paidTiers = [Tier.PRO, Tier.POWER, Tier.TEAM];

function caller(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (p === undefined) throw new ConnectError("this RPC needs an access token", Code.Unauthenticated);
  return p;
}

const isService = (p: Principal) => p.roles.includes(SERVICE_ROLE);

/** The calling user; services may not subscribe or cancel for anyone. */
function callingUser(ctx: HandlerContext): Principal {
  const p = caller(ctx);
  if (isService(p)) throw new ConnectError("checkout, tier changes and cancellation are for users: a service token may not call them", Code.PermissionDenied);
  return p;
}

/** The contract's Subscription of a user from the stored one (none: TIER_FREE, status NONE). */
export function toSubscription(userId: string, s: StoredSubscription | undefined): Subscription {
  return create(SubscriptionSchema, {
    name: `users/${userId}/subscription`,
    userId,
    tier: s?.tier ?? Tier.FREE,
    status: s?.status ?? SubscriptionStatus.NONE,
    currentPeriodEnd: s?.currentPeriodEnd && s.status !== SubscriptionStatus.CANCELED ? timestampFromDate(s.currentPeriodEnd) : undefined,
    cancelAtPeriodEnd: s?.cancelAtPeriodEnd ?? false,
    updateTime: s ? timestampFromDate(s.updatedAt) : undefined,
  });
}

/** Creates the BillingService registration. */
export function createBillingHandlers(deps: BillingHandlerDeps): ServiceRegistration {
  const { db } = deps;

  function configured(): { stripe: Stripe; sync: SubscriptionSync } {
    if (!deps.stripe || !deps.sync) throw notConfigured();
    return { stripe: deps.stripe, sync: deps.sync };
  }

  async function stripeCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw fromStripeError(err);
    }
  }

  function checkRedirect(field: string, value: string): void {
    if (deps.allowedRedirectOrigins.length === 0) {
      throw new ConnectError("checkout has nowhere to return to: set BILLING_ALLOWED_REDIRECT_ORIGINS", Code.FailedPrecondition);
    }
    const origin = new URL(value).origin;
    if (!deps.allowedRedirectOrigins.includes(origin)) {
      throw new ConnectError(`${field}: origin ${origin} is not allowed; use one of ${deps.allowedRedirectOrigins.join(", ")}`, Code.InvalidArgument);
    }
  }

  /**
   * Runs `work` once per (user, rpc, key) within 24 hours: a retry with the
   * same request gets the first answer, another request under the key is
   * refused. Without a key, just runs it.
   */
  async function once<S extends DescMessage>(
    schema: S,
    userId: string,
    rpc: string,
    key: string,
    fingerprint: string,
    work: () => Promise<MessageShape<S>>,
  ): Promise<MessageShape<S>> {
    if (key === "") return work();
    const seen = await findAnswer(db.sql, userId, rpc, key);
    if (seen) {
      if (seen.fingerprint !== fingerprint) throw new ConnectError(`idempotency_key: already used for a different ${rpc} request; use a new key`, Code.AlreadyExists);
      return fromBinary(schema, seen.answer);
    }
    const answer = await work();
    await saveAnswer(db.sql, userId, rpc, key, fingerprint, toBinary(schema, answer));
    return answer;
  }

  /** The user's Stripe customer, created once (Stripe's idempotency key makes concurrent first calls share one). */
  async function customerOf(stripe: Stripe, userId: string): Promise<string> {
    const known = await findCustomerId(db.sql, userId);
    if (known) return known;
    const customer = await stripeCall(() => stripe.customers.create({ metadata: { user_id: userId } }, { idempotencyKey: `sy-customer-${userId}` }));
    return saveCustomerId(db.sql, userId, customer.id);
  }

  /** The tier's name and Stripe price; refuses the free tier and tiers without a price. */
  function paidTier(tier: Tier): { tierName: string; price: string } {
    if (!paidTiers.includes(tier)) {
      throw new ConnectError("tier: must be TIER_PRO, TIER_POWER or TIER_TEAM (to return to TIER_FREE, cancel the subscription)", Code.InvalidArgument);
    }
    const tierName = tierClaim(tier)!;
    const price = deps.prices.get(tier);
    if (!price) throw new ConnectError(`the ${tierName} tier has no price: set STRIPE_PRICE_${tierName.toUpperCase()}`, Code.FailedPrecondition);
    return { tierName, price };
  }

  return register(BillingService, {
    async createCheckout(req, ctx) {
      const user = callingUser(ctx);
      const { stripe } = configured();
      const { tierName, price } = paidTier(req.tier);
      checkRedirect("success_url", req.successUrl);
      checkRedirect("cancel_url", req.cancelUrl);
      const fingerprint = JSON.stringify([req.tier, req.successUrl, req.cancelUrl]);
      return once(CreateCheckoutResponseSchema, user.userId, "CreateCheckout", req.idempotencyKey, fingerprint, async () => {
        const current = await findSubscription(db.sql, user.userId);
        if (current && isPaidStatus(current.status)) {
          if (current.tier === req.tier) throw new ConnectError(`you already subscribe to the ${tierName} tier`, Code.FailedPrecondition);
          throw new ConnectError(
            `you subscribe to the ${tierClaim(current.tier)} tier: move to ${tierName} with ChangeTier (a checkout would start a second subscription)`,
            Code.FailedPrecondition,
          );
        }
        const customer = await customerOf(stripe, user.userId);
        const metadata = { user_id: user.userId, tier: tierName };
        const session = await stripeCall(() =>
          stripe.checkout.sessions.create(
            {
              mode: "subscription",
              customer,
              client_reference_id: user.userId,
              metadata,
              subscription_data: { metadata },
              line_items: [{ price, quantity: 1 }],
              success_url: req.successUrl,
              cancel_url: req.cancelUrl,
            },
            req.idempotencyKey ? { idempotencyKey: `sy-checkout-${user.userId}-${req.idempotencyKey}` } : undefined,
          ),
        );
        if (!session.url) throw new ConnectError("the payment provider returned a checkout session without a URL", Code.Internal);
        return create(CreateCheckoutResponseSchema, {
          checkoutUrl: session.url,
          checkoutSessionId: session.id,
          expireTime: timestampFromDate(new Date(session.expires_at * 1000)),
        });
      });
    },

    async getSubscription(req, ctx) {
      const p = caller(ctx);
      configured();
      let userId = req.userId;
      if (isService(p)) {
        if (userId === "") throw new ConnectError("user_id: a service must name the user", Code.InvalidArgument);
      } else if (userId === "") userId = p.userId;
      // Another user's subscription is as invisible as one that does not exist.
      else if (userId !== p.userId) throw new ConnectError(`no subscription for user_id "${userId}" that you can read`, Code.NotFound);
      return { subscription: toSubscription(userId, await findSubscription(db.sql, userId)) };
    },

    async cancelSubscription(req, ctx) {
      const user = callingUser(ctx);
      const { stripe, sync } = configured();
      return once(CancelSubscriptionResponseSchema, user.userId, "CancelSubscription", req.idempotencyKey, JSON.stringify([req.atPeriodEnd]), async () => {
        const current = await findSubscription(db.sql, user.userId);
        const customerId = await findCustomerId(db.sql, user.userId);
        if (!current || !customerId || current.status === SubscriptionStatus.CANCELED) {
          throw new ConnectError("you have no paid subscription to cancel", Code.FailedPrecondition);
        }
        if (req.atPeriodEnd && current.cancelAtPeriodEnd) return create(CancelSubscriptionResponseSchema, { subscription: toSubscription(user.userId, current) });
        const options = req.idempotencyKey ? { idempotencyKey: `sy-cancel-${user.userId}-${req.idempotencyKey}` } : undefined;
        const id = current.stripeSubscriptionId;
        await stripeCall(() => (req.atPeriodEnd ? stripe.subscriptions.update(id, { cancel_at_period_end: true }, options) : stripe.subscriptions.cancel(id, {}, options)));
        const r = await stripeCall(() => sync.sync({ subscriptionId: id, customerId }));
        return create(CancelSubscriptionResponseSchema, { subscription: toSubscription(user.userId, r.subscription) });
      });
    },

    async changeTier(req, ctx) {
      const user = callingUser(ctx);
      const { stripe, sync } = configured();
      const { tierName, price } = paidTier(req.tier);
      return once(ChangeTierResponseSchema, user.userId, "ChangeTier", req.idempotencyKey, JSON.stringify([req.tier]), async () => {
        const current = await findSubscription(db.sql, user.userId);
        const customerId = await findCustomerId(db.sql, user.userId);
        if (!current || !customerId || !isPaidStatus(current.status)) {
          throw new ConnectError("you have no paid subscription to change: start one with CreateCheckout", Code.FailedPrecondition);
        }
        if (current.tier === req.tier) throw new ConnectError(`you already subscribe to the ${tierName} tier`, Code.FailedPrecondition);
        const id = current.stripeSubscriptionId;
        const live = await stripeCall(() => stripe.subscriptions.retrieve(id));
        const item = live.items.data[0];
        if (!item) throw new ConnectError(`the payment provider's subscription ${id} has no item to change`, Code.Internal);
        const options = req.idempotencyKey ? { idempotencyKey: `sy-change-${user.userId}-${req.idempotencyKey}` } : undefined;
        await stripeCall(() =>
          stripe.subscriptions.update(
            id,
            { items: [{ id: item.id, price }], proration_behavior: "create_prorations", metadata: { user_id: user.userId, tier: tierName } },
            options,
          ),
        );
        // Applied now, as the webhook would: the caller sees the new tier in the answer.
        const r = await stripeCall(() => sync.sync({ subscriptionId: id, customerId }));
        return create(ChangeTierResponseSchema, { subscription: toSubscription(user.userId, r.subscription) });
      });
    },
  });
}
