/**
 * Service tokens for processes without auth, and the master key's rules:
 * `npm run auth:service-token` mints a token that a remote verifier (auth's
 * JWKS) accepts with role "service" and that ProcessAuth hands out from
 * AUTH_SERVICE_TOKEN; a missing, malformed or expired AUTH_SERVICE_TOKEN
 * fails with a message naming it; AUTH_MASTER_KEY is required with a real
 * database and generated (once, mode 0600) for the embedded one.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { SignJWT, generateKeyPair } from "jose";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { ConfigError, createAccessTokenVerifier, createLogger, createProcessAuth, createRemoteKeys } from "../../platform/index.js";
import { loadMasterKey } from "./master-key.js";
import { startAuth, type AuthUnderTest } from "./testing.js";

const run = promisify(execFile);
const noTokenSettings = { AUTH_ISSUER: "switchyard-auth", AUTH_AUDIENCE: "switchyard", AUTH_JWKS_URL: "", AUTH_SERVICE_TOKEN: "" };

async function failure(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("expected a failure");
}

describe("service tokens from the command line", () => {
  const masterKey = randomBytes(32).toString("base64");
  let a: AuthUnderTest;
  before(async () => {
    a = await startAuth({ authEnv: { AUTH_MASTER_KEY: masterKey } });
  });
  after(async () => a.stop());

  test("a minted token is accepted remotely with role service, and handed out through AUTH_SERVICE_TOKEN", async () => {
    const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", "services/auth/mint-service-token.ts", "chat", "--ttl-hours", "48"], {
      env: { ...process.env, DATABASE_URL: a.databaseUrl, AUTH_MASTER_KEY: masterKey },
    });
    const token = stdout.trim();
    assert.match(token, /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.match(stderr, /service token for "chat", expires/);
    const verifier = createAccessTokenVerifier({
      keys: createRemoteKeys(`${a.baseUrl}/.well-known/jwks.json`),
      issuer: "switchyard-auth",
      audience: "switchyard",
    });
    const p = await verifier.verify(token);
    assert.equal(p.userId, "service:chat");
    assert.deepEqual(p.roles, ["service"]);
    assert.ok(p.expiresAt > Date.now() + 47 * 3600_000);
    const source = createProcessAuth({ ...noTokenSettings, AUTH_SERVICE_TOKEN: token }).serviceTokens("chat");
    assert.equal(await source.token(), token);
  });

  test("the command refuses bad arguments and a missing master key", async () => {
    const bad = await run(process.execPath, ["--import", "tsx", "services/auth/mint-service-token.ts", "Bad Name"], { env: process.env }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((bad as { code: number }).code, 2);
    assert.match((bad as { stderr: string }).stderr, /usage: npm run auth:service-token/);
    const noKey = await run(process.execPath, ["--import", "tsx", "services/auth/mint-service-token.ts", "chat"], {
      env: { ...process.env, DATABASE_URL: a.databaseUrl, AUTH_MASTER_KEY: "" },
    }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((noKey as { code: number }).code, 1);
    assert.match((noKey as { stderr: string }).stderr, /AUTH_MASTER_KEY is required/);
  });
});

describe("AUTH_SERVICE_TOKEN problems name the variable", () => {
  test("unset, not a JWT, expired", async () => {
    const unset = await failure(createProcessAuth(noTokenSettings).serviceTokens("chat").token());
    assert.equal(unset.code, Code.Unauthenticated);
    assert.match(unset.rawMessage, /set AUTH_SERVICE_TOKEN/);
    const junk = await failure(createProcessAuth({ ...noTokenSettings, AUTH_SERVICE_TOKEN: "junk" }).serviceTokens("chat").token());
    assert.match(junk.rawMessage, /AUTH_SERVICE_TOKEN is not a JWT/);
    const { privateKey } = await generateKeyPair("ES256");
    const old = await new SignJWT({ roles: ["service"] }).setProtectedHeader({ alg: "ES256" }).setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(privateKey);
    const expired = await failure(createProcessAuth({ ...noTokenSettings, AUTH_SERVICE_TOKEN: old }).serviceTokens("chat").token());
    assert.match(expired.rawMessage, /AUTH_SERVICE_TOKEN has expired/);
  });
});

describe("master key", () => {
  const log = createLogger("silent");
  test("required with a real database, named in the error", () => {
    assert.throws(() => loadMasterKey("", undefined, log), (e: unknown) => e instanceof ConfigError && /AUTH_MASTER_KEY is required/.test(e.message));
    assert.throws(() => loadMasterKey(Buffer.alloc(16).toString("base64"), undefined, log), /32 random bytes/);
  });
  test("generated once for the embedded database, readable only by its owner", () => {
    const dir = mkdtempSync(join(tmpdir(), "sy-auth-key-"));
    try {
      const file = join(dir, "sub", "auth-master-key");
      const first = loadMasterKey("", file, log);
      assert.equal(first.length, 32);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(loadMasterKey("", file, log), first, "the same key on the next start");
      assert.equal(Buffer.from(readFileSync(file, "utf8").trim(), "base64").length, 32);
      const explicit = randomBytes(32);
      assert.deepEqual(loadMasterKey(explicit.toString("base64"), file, log), explicit, "AUTH_MASTER_KEY wins when set");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
