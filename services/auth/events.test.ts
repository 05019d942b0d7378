/**
 * Auth's events through the outbox and a real nats-server: UserRegistered and
 * UserLoggedIn are published once the change commits (never for a failed
 * one), and a TierChanged from billing changes the user's tier so the next
 * access token carries it (a late, older change is ignored). Also the
 * process's service tokens, minted in-process when auth runs there.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { connect, type NatsConnection, type Msg } from "@nats-io/transport-node";
import { decodeJwt } from "jose";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TierChangedSchema, TierChangeSource, UserLoggedInSchema, UserRegisteredSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import type { ServiceContext, ServiceModule } from "../../platform/index.js";
import { waitFor } from "../../test/support/wait.js";
import { TIER_CHANGED_DURABLE } from "./tier-consumer.js";
import { startAuth, type AuthUnderTest } from "./testing.js";

const PASSWORD = "correct horse battery staple";
const email = () => `e${randomBytes(5).toString("hex")}@example.com`;

/** Collects messages on a subject and lets a test wait for one that matches. */
function collector(nc: NatsConnection, subject: string) {
  const seen: Msg[] = [];
  const waiters: Array<() => void> = [];
  nc.subscribe(subject, {
    callback: (_err, msg) => {
      seen.push(msg);
      for (const w of waiters.splice(0)) w();
    },
  });
  return {
    seen,
    async waitFor(match: (m: Msg) => boolean, what: string, ms = 10_000): Promise<Msg> {
      const until = Date.now() + ms;
      for (;;) {
        const found = seen.find(match);
        if (found) return found;
        if (Date.now() > until) throw new Error(`no ${what} within ${ms} ms`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
  };
}

/** Waits (bounded) until `check` holds: the shared polling helper. */
const eventually = (check: () => Promise<boolean>, what: string, ms = 10_000) => waitFor(what, check, ms, 100);

describe("auth events", () => {
  let a: AuthUnderTest;
  let nc: NatsConnection;
  let billing: ServiceContext;
  const billingModule: ServiceModule = {
    name: "billing_standin",
    summary: "publishes tier changes as billing will",
    serves: [],
    uses: ["events"],
    start(ctx) {
      billing = ctx;
      return { services: [] };
    },
  };
  const publishTierChange = (userId: string, oldTier: Tier, newTier: Tier, at: Date) =>
    billing.db.tx((tx) =>
      billing.events.publish(
        tx,
        TierChangedSchema,
        create(TierChangedSchema, { userId, oldTier, newTier, source: TierChangeSource.CHECKOUT, occurTime: timestampFromDate(at) }),
      ),
    );

  before(async () => {
    a = await startAuth({ modules: [billingModule] });
    nc = await connect({ servers: a.nats.url });
  });
  after(async () => {
    await nc.close();
    await a.stop();
  });

  test("UserRegistered and UserLoggedIn are published once, after commit; a failed Register publishes nothing", async () => {
    const registered = collector(nc, "events.auth.user_registered");
    const loggedIn = collector(nc, "events.auth.user_logged_in");
    await nc.flush();
    const e = email();
    const r = await a.client.register({ email: e, password: PASSWORD, displayName: "Eve" });
    const msg = await registered.waitFor((m) => fromBinary(UserRegisteredSchema, m.data).userId === r.user!.userId, "UserRegistered");
    const ev = fromBinary(UserRegisteredSchema, msg.data);
    assert.deepEqual([ev.email, ev.displayName, ev.tier], [e, "Eve", Tier.FREE]);
    assert.ok(msg.headers?.get("Nats-Msg-Id"), "carries its event id");

    await assert.rejects(a.client.register({ email: e, password: PASSWORD }));
    await a.client.login({ email: e, password: PASSWORD });
    await loggedIn.waitFor((m) => fromBinary(UserLoggedInSchema, m.data).userId === r.user!.userId, "UserLoggedIn");
    // The failed Register committed nothing: still exactly one UserRegistered for this email.
    await a.client.register({ email: email(), password: PASSWORD }); // a later event, to know the relay moved past
    await registered.waitFor((m) => fromBinary(UserRegisteredSchema, m.data).email !== e, "a later UserRegistered");
    assert.equal(registered.seen.filter((m) => fromBinary(UserRegisteredSchema, m.data).email === e).length, 1);
    // A refresh is not a sign-in.
    const before = loggedIn.seen.length;
    await a.client.refresh({ refreshToken: r.tokens!.refreshToken });
    await a.client.login({ email: e, password: PASSWORD });
    await loggedIn.waitFor((_m) => loggedIn.seen.length >= before + 1, "the second UserLoggedIn");
    assert.equal(loggedIn.seen.filter((m) => fromBinary(UserLoggedInSchema, m.data).userId === r.user!.userId).length, 2);
  });

  test("TierChanged changes the tier; the next access token carries it; an older change arriving late is ignored", async () => {
    const r = await a.client.register({ email: email(), password: PASSWORD });
    const id = r.user!.userId;
    const t0 = Date.now();
    await publishTierChange(id, Tier.FREE, Tier.PRO, new Date(t0));
    await eventually(async () => (await a.as(r.tokens!.accessToken).getMe({})).user!.tier === Tier.PRO, "tier becomes PRO");
    assert.equal(decodeJwt(r.tokens!.accessToken).tier, "free", "tokens already issued keep their tier until they expire");
    const refreshed = await a.client.refresh({ refreshToken: r.tokens!.refreshToken });
    assert.equal(decodeJwt(refreshed.tokens!.accessToken).tier, "pro", "the next access token carries the new tier");

    await publishTierChange(id, Tier.PRO, Tier.TEAM, new Date(t0 + 2000));
    await eventually(async () => (await a.as(refreshed.tokens!.accessToken).getMe({})).user!.tier === Tier.TEAM, "tier becomes TEAM");
    // An earlier change (by occur_time), delivered after the later one, must not win.
    const lateId = await publishTierChange(id, Tier.FREE, Tier.POWER, new Date(t0 + 1000));
    // The consumer records an event as processed in the transaction that runs its handler:
    // once the row is there, the late event has been handled (and ignored), not merely queued
    // behind some other event (batches run concurrently, so no other event can say so).
    await eventually(
      async () => (await billing.db.sql`select 1 from platform.processed_events where consumer = ${TIER_CHANGED_DURABLE} and event_id = ${lateId}`).length === 1,
      "the late TierChanged handled",
    );
    assert.equal((await a.as(refreshed.tokens!.accessToken).getMe({})).user!.tier, Tier.TEAM);
  });

  test("service tokens: minted in-process, role service, accepted by the process's verifier", async () => {
    const source = billing.auth.serviceTokens("billing");
    const token = await source.token();
    assert.equal(await source.token(), token, "cached until close to expiry");
    const principal = await billing.auth.verifier()!.verify(token);
    assert.equal(principal.userId, "service:billing");
    assert.deepEqual(principal.roles, ["service"]);
    assert.ok(principal.expiresAt - Date.now() <= 15 * 60_000);
  });
});
