/**
 * Billing's tables (schema `billing`, see migrations/): customers,
 * subscriptions, the webhook ledger and idempotent answers. Every statement
 * is a tagged template; nothing here calls Stripe.
 */
import type { Sql, TransactionSql } from "../../platform/index.js";
import type { SubscriptionState } from "./subscription-state.js";

/** How long an idempotency key's first answer is kept, ms (the contract's 24 hours). */
export const IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60_000;

interface SubscriptionRow {
  stripe_subscription_id: string;
  tier: number;
  status: number;
  current_period_end: Date | null;
  cancel_at_period_end: boolean;
  updated_at: Date;
}

/** A stored subscription and when it last changed. */
export type StoredSubscription = SubscriptionState & { readonly updatedAt: Date };

function toState(r: SubscriptionRow): StoredSubscription {
  return {
    stripeSubscriptionId: r.stripe_subscription_id,
    tier: r.tier,
    status: r.status,
    currentPeriodEnd: r.current_period_end ?? undefined,
    cancelAtPeriodEnd: r.cancel_at_period_end,
    updatedAt: r.updated_at,
  };
}

/** The user's Stripe customer id, if billing made one. */
export async function findCustomerId(sql: Sql | TransactionSql, userId: string): Promise<string | undefined> {
  const rows = await sql<{ stripe_customer_id: string }[]>`select stripe_customer_id from billing.customers where user_id = ${userId}`;
  return rows[0]?.stripe_customer_id;
}

/** Records the user's customer unless one is recorded; returns the one that is (first writer wins). */
export async function saveCustomerId(sql: Sql, userId: string, customerId: string): Promise<string> {
  await sql`insert into billing.customers (user_id, stripe_customer_id) values (${userId}, ${customerId}) on conflict (user_id) do nothing`;
  return (await findCustomerId(sql, userId))!;
}

/**
 * Locks the customer's row until `tx` ends and returns its user: every change
 * to one user's subscription runs under this lock, so they apply one at a time.
 */
export async function lockCustomer(tx: TransactionSql, customerId: string): Promise<string | undefined> {
  const rows = await tx<{ user_id: string }[]>`select user_id from billing.customers where stripe_customer_id = ${customerId} for update`;
  return rows[0]?.user_id;
}

/** The user's subscription, if they ever had one. */
export async function findSubscription(sql: Sql | TransactionSql, userId: string): Promise<StoredSubscription | undefined> {
  const rows = await sql<SubscriptionRow[]>`
    select stripe_subscription_id, tier, status, current_period_end, cancel_at_period_end, updated_at
    from billing.subscriptions where user_id = ${userId}`;
  return rows[0] ? toState(rows[0]) : undefined;
}

/**
 * Writes the user's subscription; returns it as stored. `updated_at` is the
 * clock at the write, not the transaction's start (`now()`): a transaction
 * that waited for the customer lock started before the one it waited for
 * committed, and its change (the occur_time of its events, which auth
 * compares) must still come out later.
 */
export async function saveSubscription(tx: TransactionSql, userId: string, s: SubscriptionState): Promise<StoredSubscription> {
  const rows = await tx<SubscriptionRow[]>`
    insert into billing.subscriptions (user_id, stripe_subscription_id, tier, status, current_period_end, cancel_at_period_end, updated_at)
    values (${userId}, ${s.stripeSubscriptionId}, ${s.tier}, ${s.status}, ${s.currentPeriodEnd ?? null}, ${s.cancelAtPeriodEnd}, clock_timestamp())
    on conflict (user_id) do update set
      stripe_subscription_id = excluded.stripe_subscription_id, tier = excluded.tier, status = excluded.status,
      current_period_end = excluded.current_period_end, cancel_at_period_end = excluded.cancel_at_period_end, updated_at = excluded.updated_at
    returning stripe_subscription_id, tier, status, current_period_end, cancel_at_period_end, updated_at`;
  return toState(rows[0]!);
}

/** Whether the webhook event was applied (or deliberately ignored) before. */
export async function isEventRecorded(sql: Sql | TransactionSql, eventId: string): Promise<boolean> {
  const rows = await sql`select 1 from billing.webhook_events where event_id = ${eventId}`;
  return rows.length > 0;
}

/** Records the event in the ledger; false if it was already there. */
export async function recordEvent(tx: TransactionSql | Sql, eventId: string, type: string, outcome: string): Promise<boolean> {
  const rows = await tx`
    insert into billing.webhook_events (event_id, type, outcome) values (${eventId}, ${type}, ${outcome})
    on conflict (event_id) do nothing returning event_id`;
  return rows.length > 0;
}

/** The first answer to an RPC with this key (within the window), with what it asked. */
export async function findAnswer(sql: Sql, userId: string, rpc: string, key: string): Promise<{ fingerprint: string; answer: Uint8Array } | undefined> {
  const since = new Date(Date.now() - IDEMPOTENCY_WINDOW_MS);
  const rows = await sql<{ fingerprint: string; answer: Buffer }[]>`
    select fingerprint, answer from billing.idempotent_answers
    where user_id = ${userId} and rpc = ${rpc} and idempotency_key = ${key} and created_at > ${since}`;
  return rows[0] ? { fingerprint: rows[0].fingerprint, answer: new Uint8Array(rows[0].answer) } : undefined;
}

/** Keeps an RPC's answer under its key (an expired one is replaced; a concurrent first one wins). */
export async function saveAnswer(sql: Sql, userId: string, rpc: string, key: string, fingerprint: string, answer: Uint8Array): Promise<void> {
  const since = new Date(Date.now() - IDEMPOTENCY_WINDOW_MS);
  await sql`
    insert into billing.idempotent_answers (user_id, rpc, idempotency_key, fingerprint, answer)
    values (${userId}, ${rpc}, ${key}, ${fingerprint}, ${Buffer.from(answer)})
    on conflict (user_id, rpc, idempotency_key) do update set fingerprint = excluded.fingerprint, answer = excluded.answer, created_at = now()
    where billing.idempotent_answers.created_at <= ${since}`;
}
