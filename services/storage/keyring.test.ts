import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { createKeyring, IntegrityError, parseKeyList, recordAad } from "./keyring.js";

const k1 = randomBytes(32);
const k2 = randomBytes(32);

test("an envelope opens only under its own associated data", () => {
  const ring = createKeyring([k1]);
  const env = ring.seal(Buffer.from("hello"), recordAad("u1", "r1"));
  assert.equal(ring.open(env, recordAad("u1", "r1")).toString(), "hello");
  assert.ok(!env.body.includes(Buffer.from("hello")));
  assert.throws(() => ring.open(env, recordAad("u1", "r2")), IntegrityError);
  assert.throws(() => ring.open(env, recordAad("u2", "r1")), IntegrityError);
  const flipped = Buffer.from(env.body);
  flipped[flipped.length - 1]! ^= 1;
  assert.throws(() => ring.open({ ...env, body: flipped }, recordAad("u1", "r1")), IntegrityError);
});

test("rotation re-wraps the data key; the body is untouched and opens under the new key alone", () => {
  const old = createKeyring([k1]);
  const env = old.seal(Buffer.from("payload"), "a");
  const both = createKeyring([k2, k1]);
  const rewrapped = both.rewrap(env.wrappedKey, env.kekId, "a");
  assert.equal(rewrapped.kekId, both.current.id);
  assert.notEqual(rewrapped.kekId, env.kekId);
  const onlyNew = createKeyring([k2]);
  assert.equal(onlyNew.open({ body: env.body, ...rewrapped }, "a").toString(), "payload");
  assert.throws(() => onlyNew.open(env, "a"), /does not hold/);
});

test("STORAGE_MASTER_KEY must be 32-byte base64 keys", () => {
  assert.equal(parseKeyList(`${k1.toString("base64")}, ${k2.toString("base64")}`).length, 2);
  assert.throws(() => parseKeyList("c2hvcnQ="), /32 random bytes/);
  assert.throws(() => parseKeyList(" , "), /at least one/);
});

test("STORAGE_MASTER_KEY is required with a real database; the embedded one gets a development key file, made once", async () => {
  const { mkdtempSync, readFileSync, rmSync, statSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { ConfigError, createLogger } = await import("../../platform/index.js");
  const { loadKeyring } = await import("./keyring.js");
  const log = createLogger("silent");
  assert.throws(() => loadKeyring("", undefined, log), (err: unknown) => err instanceof ConfigError && /STORAGE_MASTER_KEY is required/.test(err.message));
  const dir = mkdtempSync(join(tmpdir(), "sy-storage-key-"));
  try {
    const file = join(dir, "storage-master-key");
    const first = loadKeyring("", file, log);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const contents = readFileSync(file, "utf8");
    assert.equal(loadKeyring("", file, log).current.id, first.current.id);
    assert.equal(readFileSync(file, "utf8"), contents);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
