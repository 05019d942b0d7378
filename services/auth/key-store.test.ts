/**
 * Signing keys against a real PostgreSQL: private keys sealed at rest,
 * rotation (pre-published, then signing), tokens of the previous key valid
 * until they expire, a withdrawn key's tokens refused, several instances
 * agreeing on one key set, and a wrong master key stopping the start.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { importPKCS8 } from "jose";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { createAccessTokenVerifier, createDatabase, createLogger, type Database, migrate } from "../../platform/index.js";
import { createTestDatabase } from "../../test/support/infra.js";
import { createKeyStore, type KeyStore } from "./key-store.js";
import { seal, unseal } from "./master-key.js";
import { createTokenIssuer } from "./tokens.js";

const log = createLogger("silent");
const MIN = 60_000;
const TTL_S = 15 * 60;

async function codeOf(p: Promise<unknown>): Promise<Code | "OK"> {
  try {
    await p;
    return "OK";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("key store", () => {
  let testDb: Awaited<ReturnType<typeof createTestDatabase>>;
  let db: Database;
  const masterKey = randomBytes(32);
  let clock = Date.UTC(2030, 0, 1);
  const store = (key = masterKey): KeyStore =>
    createKeyStore({ db, masterKey: key, accessTtlS: TTL_S, rotationIntervalMs: 24 * 60 * MIN, prepublishMs: 60 * MIN, log, now: () => clock });

  before(async () => {
    testDb = await createTestDatabase("sy_auth_keys");
    db = createDatabase(testDb.url, { max: 4 });
    await migrate(db.sql, [{ service: "auth", dir: new URL("./migrations/", import.meta.url) }]);
  });
  after(async () => {
    await db.close();
    await testDb.drop();
  });

  test("private keys are sealed at rest and bound to their kid", async () => {
    const keys = store();
    await keys.maintain();
    const [row] = await db.sql<{ kid: string; private_key: Buffer }[]>`select kid, private_key from auth.signing_keys`;
    assert.ok(row);
    await assert.rejects(importPKCS8(row.private_key.toString(), "ES256"), "the stored bytes are not a usable key");
    assert.ok(!row.private_key.includes(Buffer.from("BEGIN PRIVATE KEY")));
    assert.match(unseal(masterKey, row.private_key, row.kid).toString(), /BEGIN PRIVATE KEY/);
    assert.throws(() => unseal(masterKey, row.private_key, "another-kid"), "sealed to its kid");
    assert.throws(() => unseal(randomBytes(32), row.private_key, row.kid), "needs the master key");
    const tampered = Buffer.from(row.private_key);
    tampered[tampered.length - 1]! ^= 1;
    assert.throws(() => unseal(masterKey, tampered, row.kid), "authenticated");
    assert.deepEqual(unseal(masterKey, seal(masterKey, Buffer.from("x"), "k"), "k"), Buffer.from("x"));
  });

  test("a wrong master key stops the start with a message naming AUTH_MASTER_KEY", async () => {
    await assert.rejects(store(randomBytes(32)).maintain(), /AUTH_MASTER_KEY cannot decrypt/);
  });

  test("rotation: the new key signs, the old one verifies until its tokens expired, then is withdrawn", async () => {
    const keys = store();
    await keys.maintain();
    const issuer = createTokenIssuer({ keys, issuer: "iss", audience: "aud", accessTtlS: TTL_S, now: () => clock });
    const issuedAt = clock;
    let verifierClock = clock;
    const verifier = createAccessTokenVerifier({ keys: keys.keys, issuer: "iss", audience: "aud", now: () => verifierClock, cacheSize: 0 });
    const user = { id: "0d6c3a5e-8f1e-4a43-9a3c-2b1d6e0f9a11", tier: 1, roles: [] };
    const old = await issuer.issueUser(user);

    clock += MIN;
    await keys.rotateNow();
    const fresh = await issuer.issueUser(user);
    assert.notEqual(fresh.kid, old.kid, "the new key signs");
    assert.deepEqual(keys.jwks().keys.map((k) => k.kid), [fresh.kid, old.kid], "both keys published, newest first");
    verifierClock = clock;
    assert.equal(await codeOf(verifier.verify(old.token)), "OK", "a token of the previous key still works");
    assert.equal(await codeOf(verifier.verify(fresh.token)), "OK");

    // Another instance (same table, same master key) agrees.
    const peer = store();
    await peer.maintain();
    assert.equal(peer.signer().kid, fresh.kid);
    assert.deepEqual(peer.jwks().keys.map((k) => k.kid), [fresh.kid, old.kid]);

    // Past the old key's last possible token expiry (+ margin) it is withdrawn.
    clock = issuedAt + MIN + TTL_S * 1000 + 2 * MIN;
    let withdrawn = 0;
    keys.onKeyWithdrawn(() => withdrawn++);
    await keys.maintain();
    assert.equal(withdrawn, 1);
    assert.deepEqual(keys.jwks().keys.map((k) => k.kid), [fresh.kid]);
    const rows = await db.sql<{ kid: string }[]>`select kid from auth.signing_keys`;
    assert.ok(!rows.some((r) => r.kid === old.kid), "deleted from the table");
    // Judged at a time when the token itself has not expired: refused for its key alone.
    verifierClock = issuedAt + 5 * MIN;
    const err = await verifier.verify(old.token).catch((e: unknown) => ConnectError.from(e));
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.Unauthenticated);
    assert.match(err.rawMessage, /key this deployment does not publish/);
    assert.equal(await codeOf(verifier.verify(fresh.token)), "OK");
  });

  test("scheduled rotation pre-publishes the next key an hour before it signs", async () => {
    const keys = store();
    await keys.maintain();
    const current = keys.signer().kid;
    const activeFrom = (await db.sql<{ active_from: Date }[]>`select active_from from auth.signing_keys where kid = ${current}`)[0]!.active_from.getTime();
    clock = activeFrom + 24 * 60 * MIN - 60 * MIN; // the pre-publication hour begins
    await keys.maintain();
    const published = keys.jwks().keys.map((k) => k.kid);
    assert.equal(published.length, 2, "the next key is published");
    assert.equal(keys.signer().kid, current, "but the current key still signs");
    clock = activeFrom + 24 * 60 * MIN + 1;
    assert.notEqual(keys.signer().kid, current, "at its time the next key signs, without waiting for maintenance");
    assert.equal(keys.signer().kid, published[0]);
  });

  test("a long-lived service token keeps its key published until it expires", async () => {
    const keys = store();
    await keys.maintain();
    const issuer = createTokenIssuer({ keys, issuer: "iss", audience: "aud", accessTtlS: TTL_S, now: () => clock });
    const long = await issuer.issueService("chat", 7 * 24 * 3600);
    clock += MIN;
    await keys.rotateNow();
    clock += 24 * 60 * MIN; // far past the access-token lifetime
    await keys.maintain();
    assert.ok(keys.jwks().keys.some((k) => k.kid === long.kid), "still published for the service token");
    clock = long.expiresAt.getTime() + 2 * MIN;
    await keys.maintain();
    assert.ok(!keys.jwks().keys.some((k) => k.kid === long.kid), "withdrawn once it expired");
  });
});
