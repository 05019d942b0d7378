/**
 * Refresh tokens over gRPC against a real PostgreSQL: rotation on every use,
 * reuse revoking the whole family (newest included), exactly one winner among
 * concurrent refreshes of one token, Logout revoking the family (idempotent,
 * owner only), tokens stored only hashed, a refresh that fails before its
 * answer leaving the token unspent, and the login throttle: one per-account
 * budget whatever the email's spelling, and the per-address one ignoring
 * x-forwarded-for when no proxy is trusted (the default).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeJwt } from "jose";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import type { ServiceImpl } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { createDatabase, createLogger, type Database, migrate } from "../../platform/index.js";
import { createTestDatabase } from "../../test/support/infra.js";
import { createAuthHandlers } from "./handlers.js";
import { createKeyStore } from "./key-store.js";
import { createRefreshTokens, hashRefreshToken } from "./refresh-tokens.js";
import { startAuth, type AuthUnderTest } from "./testing.js";
import { createTokenIssuer, type TokenIssuer } from "./tokens.js";
import { insertUser } from "./users.js";

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

  test("the per-account login throttle counts every spelling that signs in to the account", async () => {
    // PostgreSQL's lower() (which finds the account) maps "İ" (U+0130) to "i"; JavaScript's
    // toLowerCase() maps it to "i" + U+0307. A throttle keyed on the JavaScript form gave each
    // spelling its own budget of guesses for one account.
    const victim = `vi${randomBytes(4).toString("hex")}@example.com`;
    const variant = victim.replace("i", "\u0130");
    await a.client.register({ email: victim, password: PASSWORD });
    for (let k = 0; k < 10; k++) {
      assert.equal(await codeOf(a.client.login({ email: victim, password: `wrong guess ${k}` })), Code.Unauthenticated);
    }
    assert.equal(await codeOf(a.client.login({ email: victim, password: PASSWORD })), Code.ResourceExhausted);
    assert.equal(await codeOf(a.client.login({ email: variant, password: "wrong guess 10" })), Code.ResourceExhausted, "another spelling kept guessing");
    assert.equal(await codeOf(a.client.login({ email: variant, password: PASSWORD })), Code.ResourceExhausted, "another spelling signed in");
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

describe("refresh: a failure before the answer leaves the token unspent", () => {
  let testDb: Awaited<ReturnType<typeof createTestDatabase>>;
  let db: Database;
  before(async () => {
    testDb = await createTestDatabase("sy_auth_refresh");
    db = createDatabase(testDb.url, { max: 2 });
    await migrate(db.sql, [{ service: "auth", dir: new URL("./migrations/", import.meta.url) }]);
  });
  after(async () => {
    await db.close();
    await testDb.drop();
  });

  test("when the access token cannot be minted, the same refresh token works on retry (no spent token, no revoked family)", async () => {
    const log = createLogger("silent");
    const keys = createKeyStore({ db, masterKey: randomBytes(32), accessTtlS: 900, rotationIntervalMs: 7 * 24 * 3600_000, prepublishMs: 3600_000, log });
    await keys.maintain();
    const issuer = createTokenIssuer({ keys, issuer: "test", audience: "test", accessTtlS: 900 });
    let failNext = true;
    // The one stand-in here: the signer fails once, as an HSM or a key reload could; the database is real.
    const tokens: TokenIssuer = {
      ...issuer,
      issueUser: (u) => {
        if (!failNext) return issuer.issueUser(u);
        failNext = false;
        return Promise.reject(new Error("signer unavailable"));
      },
    };
    const refresh = createRefreshTokens(db, 24 * 3600_000);
    const unused = {} as never; // Refresh reads neither events, passwords nor the throttle
    const { impl } = createAuthHandlers({ db, events: unused, passwords: unused, tokens, refresh, throttle: unused, limits: unused, trustedProxyHops: 0 });
    const handlers = impl as Pick<ServiceImpl<typeof AuthService>, "refresh">;
    const first = await db.tx(async (tx) => {
      const user = await insertUser(tx, { id: randomUUID(), email: email(), displayName: "", passwordHash: "x" });
      return refresh.startFamily(tx, user.id);
    });
    const call = () => handlers.refresh({ refreshToken: first.token } as never, undefined as never) as Promise<{ tokens?: { refreshToken: string } }>;
    await assert.rejects(call(), /signer unavailable/);
    const retried = await call();
    assert.ok(retried.tokens?.refreshToken.startsWith("syrt_"), "the retry was refused: the failed refresh spent the token");
  });
});
