/**
 * Encryption at rest, as envelope encryption. Every stored object (a record's
 * bytes, a backup archive) is encrypted with its own fresh 256-bit data key
 * (AES-256-GCM); the data key is wrapped (AES-256-GCM again) by a
 * key-encryption key (KEK) from STORAGE_MASTER_KEY. Both layers carry the
 * object's identity (e.g. "record:<user>/<record>") as associated data, so
 * bytes or a wrapped key copied onto another row, or another user's, fail to
 * decrypt instead of being served as that row's.
 *
 * STORAGE_MASTER_KEY holds one or more KEKs, comma-separated: the first wraps
 * new data keys, every one unwraps. Rotation is: put the new key first (keep
 * the old one after it), restart, run `npm run storage:rotate-key` (it
 * re-wraps each data key under the first KEK without touching the encrypted
 * bytes), then drop the old key. A KEK is known in rows by its id, a
 * fingerprint (truncated SHA-256 under a fixed label) that says nothing of
 * the key.
 *
 * Like AUTH_MASTER_KEY (services/auth/master-key.ts), the variable is
 * required with a real database; only the embedded development database may
 * run on a key generated into DATA_DIR, with a loud warning.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { ConfigError, type Logger } from "../../platform/index.js";

const FORMAT = 1;
const IV = 12;
const TAG = 16;
const HEADER = 1 + IV + TAG;

/** A key-encryption key and its public id. */
export interface Kek {
  readonly id: string;
  readonly key: Buffer;
}

/** What envelope encryption leaves to store beside an object: its encrypted bytes and its wrapped data key. */
export interface Envelope {
  /** version | iv | tag | AES-256-GCM ciphertext of the object under its data key. */
  readonly body: Buffer;
  /** The data key, sealed the same way under the KEK `kekId`. */
  readonly wrappedKey: Buffer;
  readonly kekId: string;
}

/** Thrown when stored bytes fail to decrypt; its message names nothing secret. */
export class IntegrityError extends Error {
  constructor() {
    super("stored bytes failed their integrity check");
    this.name = "IntegrityError";
  }
}

/** The KEKs of a process and the operations on envelopes. */
export interface Keyring {
  /** The KEK that wraps new data keys. */
  readonly current: Kek;
  /** Encrypts `plaintext` under a fresh data key, both bound to `aad`. */
  seal(plaintext: Uint8Array, aad: string): Envelope;
  /** Decrypts an envelope bound to `aad`; throws IntegrityError (or a ConfigError-free Error naming the missing KEK id). */
  open(envelope: Envelope, aad: string): Buffer;
  /** Re-wraps a data key under the current KEK; the body stays as it is. */
  rewrap(wrappedKey: Buffer, kekId: string, aad: string): { wrappedKey: Buffer; kekId: string };
  /** A key for HMACs (page tokens), derived from the current KEK. */
  macKey(label: string): Buffer;
}

/** The public id of a KEK: 16 hex digits of SHA-256 over a fixed label and the key. */
export function kekId(key: Buffer): string {
  return createHash("sha256").update("switchyard-storage-kek\0").update(key).digest("hex").slice(0, 16);
}

/** Parses STORAGE_MASTER_KEY: one or more base64 keys of exactly 32 bytes, comma-separated. */
export function parseKeyList(raw: string): Buffer[] {
  const parts = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (parts.length === 0) throw new Error("must hold at least one key");
  return parts.map((part, i) => {
    const key = Buffer.from(part, "base64");
    if (key.length !== 32 || key.toString("base64").replace(/=+$/, "") !== part.replace(/=+$/, "")) {
      throw new Error(`key ${i + 1} must be 32 random bytes in base64 (e.g. \`openssl rand -base64 32\`)`);
    }
    return key;
  });
}

/**
 * The keyring: STORAGE_MASTER_KEY when set; else, only when `devFile` is
 * given (embedded database), the key in that file, created if missing.
 * Throws ConfigError naming STORAGE_MASTER_KEY otherwise.
 */
export function loadKeyring(value: string, devFile: string | undefined, log: Logger): Keyring {
  if (value !== "") return createKeyring(parseKeyList(value));
  if (devFile === undefined) {
    throw new ConfigError([
      "STORAGE_MASTER_KEY is required with a real database (DATABASE_URL set): it wraps the data keys of every stored record; " +
        "generate one with `openssl rand -base64 32` and keep it in your secret store",
    ]);
  }
  if (!existsSync(devFile)) {
    mkdirSync(dirname(devFile), { recursive: true });
    try {
      writeFileSync(devFile, randomBytes(32).toString("base64") + "\n", { mode: 0o600, flag: "wx" });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
  }
  log.warn(
    { file: devFile },
    "STORAGE_MASTER_KEY is not set: using a development key stored on disk next to the embedded database. " +
      "NEVER do this in production: set STORAGE_MASTER_KEY (openssl rand -base64 32) and DATABASE_URL.",
  );
  return createKeyring(parseKeyList(readFileSync(devFile, "utf8")));
}

/** A keyring over `keys`, the first current. */
export function createKeyring(keys: readonly Buffer[]): Keyring {
  const keks = keys.map((key) => ({ id: kekId(key), key }));
  const byId = new Map(keks.map((k) => [k.id, k]));
  const current = keks[0]!;
  const kek = (id: string): Kek => {
    const k = byId.get(id);
    // Names only the public fingerprint, so the operator knows which key to put back.
    if (k === undefined) throw new Error(`a data key is wrapped by key-encryption key ${id}, which STORAGE_MASTER_KEY does not hold`);
    return k;
  };
  return {
    current,
    seal(plaintext, aad) {
      const dataKey = randomBytes(32);
      return { body: seal(dataKey, plaintext, aad), wrappedKey: seal(current.key, dataKey, `dek|${aad}`), kekId: current.id };
    },
    open(envelope, aad) {
      const dataKey = open(kek(envelope.kekId).key, envelope.wrappedKey, `dek|${aad}`);
      return open(dataKey, envelope.body, aad);
    },
    rewrap(wrappedKey, id, aad) {
      const dataKey = open(kek(id).key, wrappedKey, `dek|${aad}`);
      return { wrappedKey: seal(current.key, dataKey, `dek|${aad}`), kekId: current.id };
    },
    macKey(label) {
      return createHmac("sha256", current.key).update(`switchyard-storage-mac\0${label}`).digest();
    },
  };
}

/** AES-256-GCM of `plaintext` under `key`, bound to `aad`: version | iv | tag | ciphertext. */
function seal(key: Buffer, plaintext: Uint8Array, aad: string): Buffer {
  const iv = randomBytes(IV);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([FORMAT]), iv, cipher.getAuthTag(), ct]);
}

/** Reverses `seal`; any wrong key, aad or byte throws IntegrityError. */
function open(key: Buffer, sealed: Buffer, aad: string): Buffer {
  if (sealed.length < HEADER || sealed[0] !== FORMAT) throw new IntegrityError();
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(1, 1 + IV));
    decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(sealed.subarray(1 + IV, HEADER));
    return Buffer.concat([decipher.update(sealed.subarray(HEADER)), decipher.final()]);
  } catch {
    throw new IntegrityError();
  }
}

/** The associated data of a record's stored bytes. */
export const recordAad = (userId: string, recordId: string) => `record:${userId}/${recordId}`;
/** The associated data of a backup archive. */
export const backupAad = (userId: string, backupId: string) => `backup:${userId}/${backupId}`;
