/**
 * Harness for billing's cross-process tests: `npm start`'s entry point with
 * SERVICES=auth,billing as a child process, on its own PostgreSQL database
 * and its own nats-server, talking to the local Stripe server
 * (test/support/stripe-server.ts) through the official SDK; clients, users,
 * and readers of what billing published.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { BillingService } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { TierChangedSchema, type TierChanged } from "../../gen/switchyard/events/v1/events_pb.js";
import { bearer } from "../../services/auth/testing.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { spawnPlatform, type PlatformProcess } from "../support/spawn.js";
import { startStripeServer, stripeEnv, type StripeServer } from "../support/stripe-server.js";

/** The console origin checkout may return to in these tests. */
export const CONSOLE = "https://console.example.com";
export const PASSWORD = "correct horse battery staple";

/** A signed-up user and their tokens. */
export interface TestUser {
  readonly userId: string;
  readonly accessToken: string;
  readonly refreshToken: string;
}

/** A billing process under test and everything it runs on. */
export interface BillingUnderTest {
  platform: PlatformProcess;
  readonly stripe: StripeServer;
  readonly nats: OwnNats;
  readonly databaseUrl: string;
  /** The test's own connection to the process's database (for "nothing written" checks). */
  readonly sql: postgres.Sql;
  readonly env: Record<string, string>;
  auth(): Client<typeof AuthService>;
  billing(token: string): Client<typeof BillingService>;
  /** Registers a new user. */
  signUp(): Promise<TestUser>;
  /** Starts the platform again (after a kill) on the same database, nats-server and Stripe; webhooks go to the new port. */
  restart(nodeArgs?: string[]): Promise<void>;
  /** TierChanged events for `userId` in JetStream, once the outbox is empty (everything committed is published). */
  tierChanges(userId: string): Promise<TierChanged[]>;
  stop(): Promise<void>;
}

/** Polls `check` every 100 ms until it holds; throws naming `what` after `ms`. */
export async function eventually<T>(check: () => Promise<T | undefined | false>, what: string, ms = 15_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts Stripe, nats-server, a database and the platform (auth + billing) in a child process. */
export async function startBilling(options: { env?: Record<string, string>; nodeArgs?: string[]; port?: number } = {}): Promise<BillingUnderTest> {
  const stripe = await startStripeServer();
  const nats = await startNats();
  const db = await createTestDatabase("sy_billing");
  const env = {
    SERVICES: "auth,billing",
    DATABASE_URL: db.url,
    NATS_URL: nats.url,
    LOG_LEVEL: "warn",
    AUTH_MASTER_KEY: randomBytes(32).toString("base64"),
    // Set for runs with every module (SERVICES empty), where storage starts too.
    STORAGE_MASTER_KEY: randomBytes(32).toString("base64"),
    AUTH_REGISTER_MAX_PER_ADDRESS: "10000",
    BILLING_ALLOWED_REDIRECT_ORIGINS: CONSOLE,
    RATE_LIMIT_FREE: "30",
    RATE_LIMIT_PRO: "45",
    ...stripeEnv(stripe),
    ...options.env,
  };
  // A generous readiness wait: on a busy 2-core machine a cold start can take tens of seconds.
  const launch = (nodeArgs?: string[]) => spawnPlatform({ env, nodeArgs, port: options.port, timeoutMs: 120_000 });
  let platform: PlatformProcess;
  try {
    platform = await launch(options.nodeArgs);
  } catch (err) {
    await stripe.close();
    await nats.kill();
    await db.drop();
    throw err;
  }
  stripe.webhookUrl = `${platform.baseUrl}/billing/webhook`;
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  const t: BillingUnderTest = {
    platform,
    stripe,
    nats,
    databaseUrl: db.url,
    sql,
    env,
    auth: () => createClient(AuthService, createGrpcTransport({ baseUrl: t.platform.baseUrl })),
    billing: (token) => createClient(BillingService, createGrpcTransport({ baseUrl: t.platform.baseUrl, interceptors: [bearer(token)] })),
    async signUp() {
      const email = `b${randomBytes(6).toString("hex")}@example.com`;
      const res = await t.auth().register({ email, password: PASSWORD, displayName: "Billing Test" });
      return { userId: res.user!.userId, accessToken: res.tokens!.accessToken, refreshToken: res.tokens!.refreshToken };
    },
    async restart(nodeArgs) {
      t.platform = await launch(nodeArgs);
      if (stripe.webhookUrl) stripe.webhookUrl = `${t.platform.baseUrl}/billing/webhook`;
    },
    async tierChanges(userId) {
      await eventually(async () => (await sql`select 1 from platform.outbox where sent_at is null limit 1`).length === 0, "outbox drained (a killed relay's claim lasts 15 s)", 45_000);
      const nc = await connect({ servers: nats.url });
      try {
        const jsm = await jetstreamManager(nc);
        const info = await jsm.streams.info("EVENTS");
        const found: TierChanged[] = [];
        for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
          const m = await jsm.streams.getMessage("EVENTS", { seq }).catch(() => null);
          if (m?.subject !== "events.billing.tier_changed") continue;
          const e = fromBinary(TierChangedSchema, m.data);
          if (e.userId === userId) found.push(e);
        }
        return found;
      } finally {
        await nc.close();
      }
    },
    async stop() {
      await t.platform.stop();
      await sql.end();
      await stripe.close();
      await nats.kill();
      await db.drop();
    },
  };
  return t;
}
