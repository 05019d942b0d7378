/**
 * Password hashing: argon2id at OWASP's parameters, weaker stored hashes
 * flagged for upgrade, over-long passwords refused before any hashing, and a
 * policy below OWASP refused outright.
 */
import { hash, type Algorithm } from "@node-rs/argon2";
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { createPasswordHasher, MAX_PASSWORD_CHARS, type PasswordHasher } from "./passwords.js";

describe("passwords", () => {
  let hasher: PasswordHasher;
  before(async () => {
    hasher = await createPasswordHasher();
  });

  test("hashes with argon2id, m=19456 KiB, t=2, p=1, salted", async () => {
    const a = await hasher.hash("correct horse battery staple");
    const b = await hasher.hash("correct horse battery staple");
    assert.match(a, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    assert.notEqual(a, b, "each hash has its own salt");
    assert.equal(await hasher.verify(a, "correct horse battery staple"), true);
    assert.equal(await hasher.verify(a, "correct horse battery stapl"), false);
  });

  test("an unknown user (no stored hash) never verifies", async () => {
    assert.equal(await hasher.verify(undefined, "whatever it is"), false);
  });

  test("a malformed stored hash never verifies", async () => {
    assert.equal(await hasher.verify("$argon2id$garbage", "whatever it is"), false);
  });

  test("hashes with weaker parameters or another variant need a rehash; current ones do not", async () => {
    const weak = await hash("pw-pw-pw-pw", { algorithm: 2 as Algorithm, memoryCost: 4096, timeCost: 1, parallelism: 1 });
    const argon2i = await hash("pw-pw-pw-pw", { algorithm: 1 as Algorithm, memoryCost: 19456, timeCost: 2, parallelism: 1 });
    assert.equal(hasher.needsRehash(weak), true);
    assert.equal(hasher.needsRehash(argon2i), true);
    assert.equal(hasher.needsRehash("not a hash"), true);
    assert.equal(hasher.needsRehash(await hasher.hash("pw-pw-pw-pw")), false);
    assert.equal(await hasher.verify(weak, "pw-pw-pw-pw"), true, "old hashes still verify, so the upgrade can happen");
  });

  test("a password over 1024 characters is refused before hashing", async () => {
    const long = "x".repeat(MAX_PASSWORD_CHARS + 1);
    await assert.rejects(hasher.hash(long), RangeError);
    await assert.rejects(hasher.verify(undefined, "y".repeat(1_000_000)), RangeError);
  });

  test("a policy below OWASP's minimum is refused", async () => {
    await assert.rejects(createPasswordHasher({ memoryKiB: 4096, timeCost: 2 }), /OWASP/);
    await assert.rejects(createPasswordHasher({ memoryKiB: 19456, timeCost: 1 }), /OWASP/);
  });
});
