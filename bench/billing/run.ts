/**
 * `npm run bench:billing`: Stripe webhook events applied per second end to
 * end (sign → POST /billing/webhook → signature check → ledger, re-read of
 * the subscription from Stripe, state, outbox → TierChanged seen on NATS),
 * beside the floor measured in the same run: signature verification alone
 * (`stripe.webhooks.constructEvent` on the same payloads, in process).
 * p50 and p99 for both; one at a time and with several users in flight.
 *
 * The platform (auth + billing) runs in a child process on a fresh database
 * and a private nats-server; Stripe is the local server of
 * test/support/stripe-server.ts, reached through the official SDK.
 * Environment: BENCH_SECONDS (per round, default 4), BENCH_USERS (in flight,
 * default 16).
 */
import { fromBinary } from "@bufbuild/protobuf";
import { connect } from "@nats-io/transport-node";
import { randomBytes, randomUUID } from "node:crypto";
import postgres from "postgres";
import Stripe from "stripe";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TierChangedSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { createStripeClient } from "../../services/billing/stripe-client.js";
import { createTestDatabase, startNats } from "../../test/support/infra.js";
import { spawnPlatform } from "../../test/support/spawn.js";
import { startStripeServer, stripeEnv, type StripeEvent } from "../../test/support/stripe-server.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const USERS = Number(process.env.BENCH_USERS ?? 16);

interface Figures {
  readonly perSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly count: number;
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
function figures(latencies: number[], ms: number): Figures {
  latencies.sort((a, b) => a - b);
  return { perSecond: (latencies.length / ms) * 1000, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), count: latencies.length };
}
const fmt = (f: Figures) => `${f.perSecond.toFixed(0).padStart(8)} /s   p50 ${f.p50.toFixed(3).padStart(8)} ms   p99 ${f.p99.toFixed(3).padStart(8)} ms   (${f.count})`;

const stripe = await startStripeServer();
const nats = await startNats();
const db = await createTestDatabase("sy_bench_billing");
const platform = await spawnPlatform({
  env: { SERVICES: "auth,billing", DATABASE_URL: db.url, NATS_URL: nats.url, LOG_LEVEL: "error", AUTH_MASTER_KEY: randomBytes(32).toString("base64"), RATE_LIMIT_ENABLED: "false", BILLING_ALLOWED_REDIRECT_ORIGINS: "https://console.example.com", ...stripeEnv(stripe) },
});
const hook = `${platform.baseUrl}/billing/webhook`;
const sql = postgres(db.url, { max: 2, onnotice: () => {} });
const nc = await connect({ servers: nats.url });

try {
  // Users with a pro subscription each: customers recorded in billing as CreateCheckout records them, checkouts paid.
  const sdk = createStripeClient(stripe.secretKey, stripe.url);
  stripe.webhookUrl = hook;
  const users: { userId: string; subscriptionId: string; tier: Tier }[] = [];
  for (let i = 0; i < USERS; i++) {
    const userId = randomUUID();
    const customer = await sdk.customers.create({ metadata: { user_id: userId } });
    await sql`insert into billing.customers (user_id, stripe_customer_id) values (${userId}, ${customer.id})`;
    const session = await sdk.checkout.sessions.create({
      mode: "subscription",
      customer: customer.id,
      line_items: [{ price: "price_pro", quantity: 1 }],
      success_url: "https://console.example.com/ok",
      subscription_data: { metadata: { user_id: userId, tier: "pro" } },
    });
    await stripe.completeCheckout(session.id);
    users.push({ userId, subscriptionId: stripe.sessions.get(session.id)!.subscription as string, tier: Tier.PRO });
  }
  stripe.webhookUrl = undefined; // from here on, the bench delivers and times each event itself

  // TierChanged as it reaches NATS (JetStream publishes are seen by core subscribers too).
  const waiting = new Map<string, { tier: Tier; done: () => void }>();
  nc.subscribe("events.billing.tier_changed", {
    callback: (_err, msg) => {
      const e = fromBinary(TierChangedSchema, msg.data);
      const w = waiting.get(e.userId);
      if (w && w.tier === e.newTier) {
        waiting.delete(e.userId);
        w.done();
      }
    },
  });

  /** One tier change of `user` at Stripe, delivered and timed until its TierChanged arrives. */
  async function oneChange(user: (typeof users)[number]): Promise<{ ms: number; event: StripeEvent; payload: string; header: string }> {
    const next = user.tier === Tier.PRO ? Tier.POWER : Tier.PRO;
    const [event] = await stripe.changeSubscription(user.subscriptionId, { price: next === Tier.PRO ? "price_pro" : "price_power" });
    const seen = new Promise<void>((done) => waiting.set(user.userId, { tier: next, done }));
    const t = performance.now();
    const payload = JSON.stringify(event);
    const header = Stripe.webhooks.generateTestHeaderString({ payload, secret: stripe.webhookSecret });
    const res = await fetch(hook, { method: "POST", headers: { "content-type": "application/json", "stripe-signature": header }, body: payload });
    if (res.status !== 200 || !(await res.text()).includes('"applied"')) throw new Error(`webhook answered ${res.status}`);
    answered.push(performance.now() - t);
    await seen;
    user.tier = next;
    return { ms: performance.now() - t, event: event!, payload, header };
  }

  let answered: number[] = [];
  async function endToEnd(inFlight: number): Promise<{ f: Figures; answered: Figures; samples: { payload: string; header: string }[] }> {
    const latencies: number[] = [];
    answered = [];
    const samples: { payload: string; header: string }[] = [];
    const start = performance.now();
    const until = start + SECONDS * 1000;
    await Promise.all(
      users.slice(0, inFlight).map(async (u) => {
        while (performance.now() < until) {
          const r = await oneChange(u);
          latencies.push(r.ms);
          if (samples.length < 2000) samples.push(r);
        }
      }),
    );
    const ms = performance.now() - start;
    return { f: figures(latencies, ms), answered: figures(answered, ms), samples };
  }

  function verifyOnly(samples: { payload: string; header: string }[]): Figures {
    const latencies: number[] = [];
    const start = performance.now();
    const until = start + SECONDS * 1000;
    for (let i = 0; performance.now() < until; i++) {
      const s = samples[i % samples.length]!;
      const t = performance.now();
      Stripe.webhooks.constructEvent(s.payload, s.header, stripe.webhookSecret, 300);
      latencies.push(performance.now() - t);
    }
    return figures(latencies, performance.now() - start);
  }

  /** Context for a loaded machine: a bare HTTP round trip to the same process (GET /healthz), one at a time. */
  async function healthRoundTrip(): Promise<Figures> {
    const latencies: number[] = [];
    const start = performance.now();
    const until = start + SECONDS * 1000;
    while (performance.now() < until) {
      const t = performance.now();
      await (await fetch(`${platform.baseUrl}/healthz`)).text();
      latencies.push(performance.now() - t);
    }
    return figures(latencies, performance.now() - start);
  }

  await endToEnd(1); // warm-up round (JIT, pools, prepared statements)
  const health = await healthRoundTrip();
  const one = await endToEnd(1);
  const many = await endToEnd(USERS);
  const verify = verifyOnly(many.samples);
  const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from billing.webhook_events`;

  console.log(`bench/billing: ${SECONDS} s per round; ${USERS} users; webhook ledger rows ${n}`);
  console.log(`signature verification alone (constructEvent, in process) ${fmt(verify)}`);
  console.log(`HTTP round trip to the process (GET /healthz), 1 in flight ${fmt(health)}`);
  console.log(`webhook end to end, 1 in flight                           ${fmt(one.f)}`);
  console.log(`webhook end to end, ${String(USERS).padEnd(2)} in flight                          ${fmt(many.f)}`);
  console.log(`  of which POST to 2xx (committed), 1 in flight             ${fmt(one.answered)}`);
  console.log(`  of which POST to 2xx (committed), ${String(USERS).padEnd(2)} in flight            ${fmt(many.answered)}`);
  console.log(`ratio end to end / verification alone: ${(one.f.perSecond / verify.perSecond).toFixed(4)}× (1 in flight), ${(many.f.perSecond / verify.perSecond).toFixed(4)}× (${USERS} in flight)`);
  console.log(`p50 end to end / verification alone: ${(one.f.p50 / verify.p50).toFixed(0)}×; / bare HTTP round trip: ${(one.f.p50 / health.p50).toFixed(1)}× (1 in flight)`);
} finally {
  await nc.close();
  await sql.end();
  await platform.stop();
  await stripe.close();
  await nats.kill();
  await db.drop();
}
