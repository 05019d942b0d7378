/**
 * The master key that encrypts auth's private signing keys at rest
 * (AES-256-GCM, the key id bound as associated data, so a sealed key cannot
 * be swapped onto another row).
 *
 * It comes from AUTH_MASTER_KEY (32 bytes, base64). Only in development, when
 * the database is the embedded one under .data/ (DATABASE_URL unset), may it
 * be missing: a key is then generated into .data/auth-master-key (mode 0600)
 * with a loud warning. That key sits beside the data it protects, which is no
 * protection at all, but the embedded database is a development store whose
 * data would be lost with a fresh key anyway; with a real database (any
 * DATABASE_URL) the variable is required, so production never runs on a key
 * written to disk by accident.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { ConfigError, type Logger } from "../../platform/index.js";

const version = 1;

/** Parses AUTH_MASTER_KEY: base64 of exactly 32 bytes. */
export function parseMasterKey(raw: string): Buffer {
  const key = Buffer.from(raw.trim(), "base64");
  if (key.length !== 32 || key.toString("base64").replace(/=+$/, "") !== raw.trim().replace(/=+$/, "")) {
    throw new Error("must be 32 random bytes in base64 (e.g. `openssl rand -base64 32`)");
  }
  return key;
}

/**
 * The master key: AUTH_MASTER_KEY when set; else, only when `devFile` is
 * given (embedded database), the key in that file, created if missing.
 * Throws ConfigError naming AUTH_MASTER_KEY otherwise.
 */
export function loadMasterKey(value: string, devFile: string | undefined, log: Logger): Buffer {
  if (value !== "") return parseMasterKey(value);
  if (devFile === undefined) {
    throw new ConfigError([
      "AUTH_MASTER_KEY is required with a real database (DATABASE_URL set): it encrypts the signing keys; " +
        "generate one with `openssl rand -base64 32` and keep it in your secret store",
    ]);
  }
  if (!existsSync(devFile)) {
    mkdirSync(dirname(devFile), { recursive: true });
    writeFileSync(devFile, randomBytes(32).toString("base64") + "\n", { mode: 0o600, flag: "wx" });
  }
  log.warn(
    { file: devFile },
    "AUTH_MASTER_KEY is not set: using a development master key stored on disk next to the embedded database. " +
      "NEVER do this in production: set AUTH_MASTER_KEY (openssl rand -base64 32) and DATABASE_URL.",
  );
  return parseMasterKey(readFileSync(devFile, "utf8"));
}

/** Encrypts `plaintext` under `masterKey`, bound to `aad`: version | iv | tag | ciphertext. */
export function seal(masterKey: Buffer, plaintext: Buffer, aad: string): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", masterKey, iv);
  cipher.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([version]), iv, cipher.getAuthTag(), ct]);
}

/** Decrypts what `seal` made; throws if the key, the aad or a byte is wrong. */
export function unseal(masterKey: Buffer, sealed: Buffer, aad: string): Buffer {
  if (sealed.length < 29 || sealed[0] !== version) throw new Error("sealed key has an unknown format");
  const decipher = createDecipheriv("aes-256-gcm", masterKey, sealed.subarray(1, 13));
  decipher.setAAD(Buffer.from(aad));
  decipher.setAuthTag(sealed.subarray(13, 29));
  return Buffer.concat([decipher.update(sealed.subarray(29)), decipher.final()]);
}
