-- Billing's tables: one Stripe customer per user, each user's subscription,
-- the ledger of webhook events applied, and answers kept for idempotency keys.
create schema if not exists billing;

create table billing.customers (
  user_id text primary key,
  stripe_customer_id text not null unique,
  created_at timestamptz not null default now()
);

-- One row per user who ever had a paid subscription; the others are TIER_FREE with status NONE.
create table billing.subscriptions (
  user_id text primary key references billing.customers (user_id),
  stripe_subscription_id text not null,
  -- switchyard.common.v1.Tier: 1 free, 2 pro, 3 power, 4 team (what the subscription gives now).
  tier smallint not null check (tier between 1 and 4),
  -- switchyard.billing.v1.SubscriptionStatus.
  status smallint not null check (status between 1 and 7),
  current_period_end timestamptz,
  cancel_at_period_end boolean not null default false,
  updated_at timestamptz not null default now()
);
create index subscriptions_stripe_id on billing.subscriptions (stripe_subscription_id);

-- Every Stripe event applied (or deliberately ignored) once; a redelivery finds its id here.
create table billing.webhook_events (
  event_id text primary key,
  type text not null,
  outcome text not null,
  received_at timestamptz not null default now()
);

-- First answers of RPCs called with an idempotency key (24 hours).
create table billing.idempotent_answers (
  user_id text not null,
  rpc text not null,
  idempotency_key text not null,
  -- What the request asked, so the key reused for another request is refused.
  fingerprint text not null,
  answer bytea not null,
  created_at timestamptz not null default now(),
  primary key (user_id, rpc, idempotency_key)
);
