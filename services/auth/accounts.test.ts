/**
 * AuthService accounts over gRPC against a real PostgreSQL and nats-server:
 * registration rules, sign-in, the access token's shape, enumeration
 * resistance, login and registration throttling (RESOURCE_EXHAUSTED with
 * RetryInfo, temporary), the argon2 upgrade at login, GetMe and UpdateMe
 * (field mask, mass assignment), and the JWKS route.
 *
 * The process trusts one proxy hop, so each test sends its own
 * x-forwarded-for and has its own per-address throttle.
 */
import { create } from "@bufbuild/protobuf";
import { durationMs, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { hash, type Algorithm } from "@node-rs/argon2";
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { startAuth, type AuthUnderTest } from "./testing.js";

const PASSWORD = "correct horse battery staple";
let n = 0;
const email = () => `user${++n}.${randomBytes(3).toString("hex")}@example.com`;
const from = (address: string) => ({ headers: { "x-forwarded-for": `203.0.113.77, ${address}` } });

async function failure(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("expected the call to fail");
}

const LOGIN_WINDOW_MS = 1500;

/**
 * Runs `attempts` (fresh keys each round) until they all fit in one throttle
 * window as the client measures it, and returns how the last call failed. A
 * loaded machine can stretch a round past the window, which then restarts
 * (the throttle rightly lets the call through): that round proves nothing
 * and is run again, so the assertion never depends on the machine's speed.
 */
async function withinOneWindow(attempts: (round: number) => Promise<unknown>): Promise<ConnectError> {
  for (let round = 0; round < 5; round++) {
    const t0 = Date.now();
    const outcome = await attempts(round).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    if (outcome?.code === Code.ResourceExhausted) return outcome;
    if (Date.now() - t0 < LOGIN_WINDOW_MS) {
      assert.fail(outcome === undefined ? "the call over the limit went through within one window" : `the call over the limit failed with ${Code[outcome.code]}: ${outcome.rawMessage}`);
    }
  }
  return assert.fail("no round of attempts fitted in one throttle window in five tries");
}

describe("auth accounts", () => {
  let a: AuthUnderTest;
  let sql: postgres.Sql;

  before(async () => {
    a = await startAuth({
      authEnv: {
        AUTH_TRUSTED_PROXY_HOPS: "1",
        AUTH_LOGIN_MAX_PER_ACCOUNT: "3",
        AUTH_LOGIN_MAX_PER_ADDRESS: "6",
        AUTH_LOGIN_WINDOW_MS: String(LOGIN_WINDOW_MS),
        AUTH_REGISTER_MAX_PER_ADDRESS: "2",
      },
    });
    sql = postgres(a.databaseUrl, { max: 2, onnotice: () => {} });
  });
  after(async () => {
    await sql.end();
    await a.stop();
  });

  test("register: a new free-tier user, signed in, and tokens of the documented shape", async () => {
    const e = email();
    const r = await a.client.register({ email: e, password: PASSWORD, displayName: "Ada" }, from("198.51.100.1"));
    assert.equal(r.user!.email, e);
    assert.equal(r.user!.displayName, "Ada");
    assert.equal(r.user!.tier, Tier.FREE);
    assert.equal(r.user!.name, `users/${r.user!.userId}`);
    assert.deepEqual(r.user!.roles, []);
    const t = r.tokens!;
    assert.equal(t.tokenType, "Bearer");
    assert.match(t.refreshToken, /^syrt_[A-Za-z0-9_-]{43}$/);
    const header = decodeProtectedHeader(t.accessToken);
    assert.deepEqual(Object.keys(header).sort(), ["alg", "kid", "typ"]);
    assert.equal(header.alg, "ES256");
    assert.equal(header.typ, "at+jwt");
    const claims = decodeJwt(t.accessToken);
    assert.equal(claims.iss, "switchyard-auth");
    assert.equal(claims.aud, "switchyard");
    assert.equal(claims.sub, r.user!.userId);
    assert.equal(claims.tier, "free");
    assert.deepEqual(claims.roles, []);
    assert.ok(claims.exp! - claims.iat! <= 15 * 60, "an access token lives 15 minutes at most");
    assert.equal(Number(t.accessTokenExpireTime!.seconds), claims.exp);
    const me = await a.as(t.accessToken).getMe({});
    assert.equal(me.user!.userId, r.user!.userId);
  });

  test("register: bad input answers INVALID_ARGUMENT naming the field; a taken email ALREADY_EXISTS", async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ email: "not-an-email", password: PASSWORD }, /^email: must be an email address/],
      [{ email: "", password: PASSWORD }, /^email: /],
      [{ email: email(), password: "short" }, /^password: must be at least 10 characters/],
      [{ email: email(), password: "" }, /^password: /],
      [{ email: email(), password: "x".repeat(1025) }, /^password: must be at most 1024 characters/],
      [{ email: email(), password: PASSWORD, displayName: "d".repeat(101) }, /^display_name: must be at most 100/],
    ];
    for (const [req, message] of cases) {
      const err = await failure(a.client.register(req, from("198.51.100.2")));
      assert.equal(err.code, Code.InvalidArgument, JSON.stringify(req).slice(0, 80));
      assert.match(err.rawMessage, message);
    }
    const e = email();
    await a.client.register({ email: e, password: PASSWORD }, from("198.51.100.3"));
    const dup = await failure(a.client.register({ email: e.toUpperCase(), password: PASSWORD }, from("198.51.100.3")));
    assert.equal(dup.code, Code.AlreadyExists);
    assert.match(dup.rawMessage, /already exists; sign in with Login/);
  });

  test("register is throttled per client address, with RetryInfo", async () => {
    await a.client.register({ email: email(), password: PASSWORD }, from("198.51.100.4"));
    await a.client.register({ email: email(), password: PASSWORD }, from("198.51.100.4"));
    const err = await failure(a.client.register({ email: email(), password: PASSWORD }, from("198.51.100.4")));
    assert.equal(err.code, Code.ResourceExhausted);
    const [retry] = err.findDetails(RetryInfoSchema);
    assert.ok(retry?.retryDelay && durationMs(retry.retryDelay) > 0, "RetryInfo says when to retry");
    // Another address is not affected.
    await a.client.register({ email: email(), password: PASSWORD }, from("198.51.100.5"));
  });

  test("login: case-insensitive email; unknown email and wrong password are indistinguishable", async () => {
    const e = email();
    await a.client.register({ email: e, password: PASSWORD }, from("198.51.100.6"));
    const ok = await a.client.login({ email: e.toUpperCase(), password: PASSWORD }, from("198.51.100.6"));
    assert.equal(decodeJwt(ok.tokens!.accessToken).sub, ok.user!.userId);
    const wrong = await failure(a.client.login({ email: e, password: PASSWORD + "!" }, from("198.51.100.7")));
    const unknown = await failure(a.client.login({ email: email(), password: PASSWORD }, from("198.51.100.8")));
    assert.equal(wrong.code, Code.Unauthenticated);
    assert.equal(unknown.code, wrong.code);
    assert.equal(unknown.rawMessage, wrong.rawMessage);
    assert.equal(wrong.rawMessage, "the email or the password is wrong");
    assert.deepEqual(unknown.details, wrong.details);
  });

  test("login is throttled per account (known or not, alike), then unblocks: no permanent lockout", async () => {
    let known = "";
    for (const [i, kind] of ["known", "unknown"].entries()) {
      // Three attempts allowed per account per window, each from another address.
      const blocked = await withinOneWindow(async (round) => {
        const target = email();
        if (kind === "known") await a.client.register({ email: (known = target), password: PASSWORD }, from(`198.51.100.${9 + round * 50}`));
        for (let k = 0; k < 3; k++) {
          const err = await failure(a.client.login({ email: target, password: "wrong password" }, from(`198.51.100.${20 + i * 10 + k + round * 50}`)));
          assert.equal(err.code, Code.Unauthenticated);
        }
        return a.client.login({ email: target, password: PASSWORD }, from(`198.51.100.${29 + i * 10 + round * 50}`));
      });
      assert.equal(blocked.code, Code.ResourceExhausted, "even the right password waits while the account is throttled");
      assert.match(blocked.rawMessage, /^too many sign-in attempts for this account or from this address; retry in \d+ s$/);
      const [retry] = blocked.findDetails(RetryInfoSchema);
      // Not a timing: the wait is what is left of the window, never more.
      assert.ok(retry?.retryDelay && durationMs(retry.retryDelay) > 0 && durationMs(retry.retryDelay) <= LOGIN_WINDOW_MS);
    }
    // The window (1.5 s here) ends and the account may sign in again.
    const until = Date.now() + 10_000;
    for (;;) {
      try {
        await a.client.login({ email: known, password: PASSWORD }, from("198.51.100.60"));
        break;
      } catch (err) {
        assert.equal(ConnectError.from(err).code, Code.ResourceExhausted);
        assert.ok(Date.now() < until, "the account was still throttled 10 s after its window");
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  });

  test("login is throttled per client address; x-forwarded-for entries left of the trusted hop are ignored", async () => {
    const blocked = await withinOneWindow(async (round) => {
      const seen = `198.51.${101 + round}.70`; // the address the trusted proxy saw
      for (let k = 0; k < 6; k++) {
        // A client rotating the address it claims (left entry) stays one address: the one the proxy saw.
        const err = await failure(a.client.login({ email: email(), password: PASSWORD }, { headers: { "x-forwarded-for": `10.9.9.${k}, ${seen}` } }));
        assert.equal(err.code, Code.Unauthenticated);
      }
      return a.client.login({ email: email(), password: PASSWORD }, { headers: { "x-forwarded-for": `10.0.0.1, ${seen}` } });
    });
    assert.equal(blocked.code, Code.ResourceExhausted);
    assert.equal(blocked.findDetails(RetryInfoSchema).length, 1);
  });

  test("a weaker stored hash is upgraded to the current argon2id parameters at the next login", async () => {
    const e = email();
    const r = await a.client.register({ email: e, password: PASSWORD }, from("198.51.100.80"));
    const weak = await hash(PASSWORD, { algorithm: 2 as Algorithm, memoryCost: 4096, timeCost: 1, parallelism: 1 });
    await sql`update auth.users set password_hash = ${weak} where id = ${r.user!.userId}`;
    await a.client.login({ email: e, password: PASSWORD }, from("198.51.100.80"));
    const [row] = await sql<{ password_hash: string }[]>`select password_hash from auth.users where id = ${r.user!.userId}`;
    assert.match(row!.password_hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    await a.client.login({ email: e, password: PASSWORD }, from("198.51.100.80"));
  });

  test("UpdateMe changes display_name and email only; id, tier and roles cannot be set", async () => {
    const r = await a.client.register({ email: email(), password: PASSWORD, displayName: "Before" }, from("198.51.100.90"));
    const me = a.as(r.tokens!.accessToken);
    const id = r.user!.userId;
    const newEmail = email();
    const intruder = {
      userId: "00000000-0000-4000-8000-000000000000",
      name: "users/00000000-0000-4000-8000-000000000000",
      tier: Tier.TEAM,
      roles: ["admin", "service"],
      displayName: "After",
      email: newEmail,
      createTime: { seconds: 1n },
    };
    const updated = await me.updateMe({ user: intruder, updateMask: create(FieldMaskSchema, { paths: ["display_name", "email"] }) });
    assert.equal(updated.user!.displayName, "After");
    assert.equal(updated.user!.email, newEmail);
    assert.equal(updated.user!.userId, id);
    assert.equal(updated.user!.tier, Tier.FREE);
    assert.deepEqual(updated.user!.roles, []);
    assert.notEqual(updated.user!.createTime!.seconds, 1n);

    for (const path of ["tier", "roles", "user_id", "name", "create_time", "update_time", "password_hash", "display_name,tier"]) {
      const err = await failure(me.updateMe({ user: intruder, updateMask: { paths: path.split(",") } }));
      assert.equal(err.code, Code.InvalidArgument, path);
      assert.match(err.rawMessage, /^update_mask: .* cannot be updated/);
    }
    const empty = await failure(me.updateMe({ user: intruder, updateMask: { paths: [] } }));
    assert.equal(empty.code, Code.InvalidArgument);
    const noEmail = await failure(me.updateMe({ user: { email: "" }, updateMask: { paths: ["email"] } }));
    assert.equal(noEmail.code, Code.InvalidArgument);
    const badEmail = await failure(me.updateMe({ user: { email: "nope" }, updateMask: { paths: ["email"] } }));
    assert.equal(badEmail.code, Code.InvalidArgument);

    const after = (await me.getMe({})).user!;
    assert.equal(after.tier, Tier.FREE);
    assert.deepEqual(after.roles, []);
    assert.equal(after.userId, id);
    const [row] = await sql<{ tier: number; roles: string[] }[]>`select tier, roles from auth.users where id = ${id}`;
    assert.deepEqual({ tier: row!.tier, roles: row!.roles }, { tier: Tier.FREE, roles: [] });
    // A fresh token carries the unchanged tier and roles.
    const relogin = await a.client.login({ email: newEmail, password: PASSWORD }, from("198.51.100.91"));
    assert.deepEqual([decodeJwt(relogin.tokens!.accessToken).tier, decodeJwt(relogin.tokens!.accessToken).roles], ["free", []]);

    const other = await a.client.register({ email: email(), password: PASSWORD }, from("198.51.100.92"));
    const taken = await failure(me.updateMe({ user: { email: other.user!.email.toUpperCase() }, updateMask: { paths: ["email"] } }));
    assert.equal(taken.code, Code.AlreadyExists);
  });

  test("GetMe and UpdateMe need a token; a deleted user is NOT_FOUND", async () => {
    assert.equal((await failure(a.client.getMe({}))).code, Code.Unauthenticated);
    assert.equal((await failure(a.client.updateMe({ user: {}, updateMask: { paths: ["display_name"] } }))).code, Code.Unauthenticated);
    const r = await a.client.register({ email: email(), password: PASSWORD }, from("198.51.100.93"));
    await sql`delete from auth.users where id = ${r.user!.userId}`;
    const err = await failure(a.as(r.tokens!.accessToken).getMe({}));
    assert.equal(err.code, Code.NotFound);
    const refresh = await failure(a.client.refresh({ refreshToken: r.tokens!.refreshToken }));
    assert.equal(refresh.code, Code.Unauthenticated);
  });

  test("the JWKS is served with cache headers and verifies auth's tokens remotely", async () => {
    const res = await fetch(`${a.baseUrl}/.well-known/jwks.json`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("cache-control") ?? "", /max-age=\d+/);
    const body = (await res.json()) as { keys: Array<Record<string, unknown>> };
    assert.ok(body.keys.length >= 1);
    for (const k of body.keys) {
      assert.equal(k.kty, "EC");
      assert.equal(k.alg, "ES256");
      assert.equal(k.d, undefined, "no private part is published");
    }
    const r = await a.client.register({ email: email(), password: PASSWORD }, from("198.51.100.94"));
    const { payload } = await jwtVerify(r.tokens!.accessToken, createRemoteJWKSet(new URL(`${a.baseUrl}/.well-known/jwks.json`)), {
      algorithms: ["ES256"],
      issuer: "switchyard-auth",
      audience: "switchyard",
      typ: "at+jwt",
    });
    assert.equal(payload.sub, r.user!.userId);
  });
});
