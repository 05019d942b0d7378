/**
 * Refresh tokens over gRPC against a real PostgreSQL: rotation on every use,
 * reuse revoking the whole family (newest included), exactly one winner among
 * concurrent refreshes of one token, Logout revoking the family (idempotent,
 * owner only), tokens stored only hashed, and the per-address login throttle
 * ignoring x-forwarded-for when no proxy is trusted (the default).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeJwt } from "jose";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { hashRefreshToken } from "./refresh-tokens.js";
import { startAuth, type AuthUnderTest } from "./testing.js";

const PASSWORD = "correct horse battery staple";
const email = () => `r${randomBytes(5).toString("hex")}@example.com`;

async function codeOf(p: Promise<unknown>): Promise<Code | "OK"> {
  try {
    await p;
    return "OK";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("refresh tokens", () => {
  let a: AuthUnderTest;
  let sql: postgres.Sql;
  const signUp = async () => a.client.register({ email: email(), password: PASSWORD });

  before(async () => {
    a = await startAuth({ authEnv: { AUTH_LOGIN_MAX_PER_ADDRESS: "40", AUTH_REGISTER_MAX_PER_ADDRESS: "100" } });
    sql = postgres(a.databaseUrl, { max: 2, onnotice: () => {} });
  });
  after(async () => {
    await sql.end();
    await a.stop();
  });

  test("each refresh spends its token and returns the next one of the family", async () => {
    const r = await signUp();
    const first = r.tokens!.refreshToken;
    const second = (await a.client.refresh({ refreshToken: first })).tokens!;
    assert.notEqual(second.refreshToken, first);
    assert.equal(decodeJwt(second.accessToken).sub, r.user!.userId);
    assert.equal((await a.as(second.accessToken).getMe({})).user!.userId, r.user!.userId);
    const third = (await a.client.refresh({ refreshToken: second.refreshToken })).tokens!;
    assert.notEqual(third.refreshToken, second.refreshToken);
  });

  test("reusing a spent token revokes the whole family, the newest token included", async () => {
    const r = await signUp();
    const t1 = r.tokens!.refreshToken;
    const t2 = (await a.client.refresh({ refreshToken: t1 })).tokens!.refreshToken;
    const t3 = (await a.client.refresh({ refreshToken: t2 })).tokens!.refreshToken;
    // Another sign-in of the same user is another family, untouched.
    const other = (await a.client.login({ email: r.user!.email, password: PASSWORD })).tokens!.refreshToken;

    const reuse = await a.client.refresh({ refreshToken: t1 }).catch((e: unknown) => ConnectError.from(e));
    assert.ok(reuse instanceof ConnectError);
    assert.equal(reuse.code, Code.Unauthenticated);
    assert.match(reuse.rawMessage, /already used, so every token of this sign-in has been revoked/);
    assert.equal(await codeOf(a.client.refresh({ refreshToken: t3 })), Code.Unauthenticated, "the newest token is revoked too");
    assert.equal(await codeOf(a.client.refresh({ refreshToken: t2 })), Code.Unauthenticated);
    assert.equal(await codeOf(a.client.refresh({ refreshToken: other })), "OK", "other families keep working");
  });

  test("concurrent refreshes of one token: exactly one succeeds", async () => {
    for (let round = 0; round < 3; round++) {
      const r = await signUp();
      const token = r.tokens!.refreshToken;
      const results = await Promise.all(Array.from({ length: 6 }, () => codeOf(a.client.refresh({ refreshToken: token }))));
      assert.equal(results.filter((c) => c === "OK").length, 1, `round ${round}: ${results.join(",")}`);
      assert.ok(results.every((c) => c === "OK" || c === Code.Unauthenticated));
      const [row] = await sql<{ n: number }[]>`
        select count(*)::int as n from auth.refresh_tokens t join auth.token_families f on f.id = t.family_id
        where f.user_id = ${r.user!.userId}`;
      assert.equal(row!.n, 2, "one token was spent and exactly one successor issued");
    }
  });

  test("logout revokes the family: refresh fails afterwards; logout is idempotent", async () => {
    const r = await signUp();
    const me = a.as(r.tokens!.accessToken);
    const t2 = (await a.client.refresh({ refreshToken: r.tokens!.refreshToken })).tokens!.refreshToken;
    await me.logout({ refreshToken: r.tokens!.refreshToken }); // an older token of the family names it
    assert.equal(await codeOf(a.client.refresh({ refreshToken: t2 })), Code.Unauthenticated);
    await me.logout({ refreshToken: t2 });
    await me.logout({ refreshToken: "syrt_" + "x".repeat(43) });
    // The access token stays valid until it expires (documented).
    assert.equal(await codeOf(me.getMe({})), "OK");
  });

  test("logout needs an access token, and only the owner may revoke a family", async () => {
    const alice = await signUp();
    const bob = await signUp();
    assert.equal(await codeOf(a.client.logout({ refreshToken: alice.tokens!.refreshToken })), Code.Unauthenticated);
    assert.equal(await codeOf(a.as(bob.tokens!.accessToken).logout({ refreshToken: alice.tokens!.refreshToken })), Code.PermissionDenied);
    assert.equal(await codeOf(a.client.refresh({ refreshToken: alice.tokens!.refreshToken })), "OK", "alice's family is intact");
  });

  test("refresh tokens are stored only as SHA-256; expired, unknown and malformed ones are refused", async () => {
    const r = await signUp();
    const token = r.tokens!.refreshToken;
    const rows = await sql<{ token_hash: Buffer }[]>`select token_hash from auth.refresh_tokens`;
    assert.ok(rows.some((x) => x.token_hash.equals(hashRefreshToken(token))));
    const dump = JSON.stringify(await sql`select * from auth.refresh_tokens`);
    assert.ok(!dump.includes(token.slice(5)), "the token itself is not stored");
    await sql`update auth.refresh_tokens set expires_at = now() - interval '1 second' where token_hash = ${hashRefreshToken(token)}`;
    assert.equal(await codeOf(a.client.refresh({ refreshToken: token })), Code.Unauthenticated);
    assert.equal(await codeOf(a.client.refresh({ refreshToken: "syrt_unknown" })), Code.Unauthenticated);
    assert.equal(await codeOf(a.client.refresh({ refreshToken: "" })), Code.InvalidArgument);
    assert.equal(await codeOf(a.client.refresh({ refreshToken: "x".repeat(1025) })), Code.InvalidArgument);
    assert.equal(await codeOf(a.client.refresh({ refreshToken: r.tokens!.accessToken })), Code.Unauthenticated, "an access token is no refresh token");
  });

  test("without a trusted proxy, x-forwarded-for does not split the per-address login throttle", async () => {
    // Runs last: it uses up this process's per-address budget (40 attempts per window).
    const [row] = await sql<{ hits: number }[]>`select coalesce(max(hits), 0)::int as hits from auth.throttle where key like 'login-address:%'`;
    let blocked = false;
    for (let k = row!.hits; k <= 41 && !blocked; k++) {
      const code = await codeOf(a.client.login({ email: email(), password: PASSWORD }, { headers: { "x-forwarded-for": `10.1.${k}.1` } }));
      if (code === Code.ResourceExhausted) blocked = true;
      else assert.equal(code, Code.Unauthenticated);
    }
    assert.ok(blocked, "claiming another address in x-forwarded-for escaped the per-address throttle");
  });
});
