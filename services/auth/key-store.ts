/**
 * Auth's signing keys: ES256 key pairs in `auth.signing_keys`, private halves
 * sealed under the master key, every instance holding the same set in memory.
 *
 * Lifecycle of a key (times from the table, so every instance agrees):
 * - created `prepublishMs` before it starts signing, and published at once,
 *   so verifiers that cache the JWKS know it before the first token it signs;
 * - signs from `active_from` until a newer key's `active_from`;
 * - stays published until the last token it signed has expired: the
 *   successor's `active_from` + the access-token lifetime + a skew margin, or
 *   `tokens_until` when a longer-lived service token was minted with it;
 * - then it is deleted, and a token it signed no longer verifies.
 *
 * `maintain()` (every minute, under an advisory lock, so instances take
 * turns) creates the first key, the next key when rotation is due, and
 * deletes withdrawn ones; then it reloads the set.
 */
import { calculateJwkThumbprint, errors, exportJWK, exportPKCS8, generateKeyPair, importJWK, importPKCS8, type CryptoKey, type JWK, type JWTVerifyGetKey } from "jose";
import { ACCESS_TOKEN_ALG, type Database, type Logger, type TransactionSql } from "../../platform/index.js";
import { seal, unseal } from "./master-key.js";

/** Margin past a token's expiry before its key is withdrawn (beyond verifiers' clock tolerance). */
const SKEW_MS = 60_000;

/** Options of `createKeyStore`. */
export interface KeyStoreOptions {
  readonly db: Database;
  readonly masterKey: Buffer;
  /** Lifetime of access tokens, in seconds: how long a retired key stays published. */
  readonly accessTtlS: number;
  /** How long a key signs before the next one takes over. */
  readonly rotationIntervalMs: number;
  /** How long before it signs a new key is published. */
  readonly prepublishMs: number;
  readonly log: Logger;
  /** The clock (tests); defaults to Date.now. */
  readonly now?: () => number;
}

/** The key that signs now. */
export interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
}

/** The key set of this instance. */
export interface KeyStore {
  /** Public key lookup by `kid` for jose (published keys only). */
  readonly keys: JWTVerifyGetKey;
  /** The key signing now; throws if none is loaded (call `maintain()` first). */
  signer(): SigningKey;
  /** The published public keys, newest first, as a JWKS document. */
  jwks(): { keys: JWK[] };
  /** Creates, rotates and deletes keys as due, then reloads the set. */
  maintain(): Promise<void>;
  /** Makes a new key sign from now on (operators, tests); the previous key retires. */
  rotateNow(): Promise<void>;
  /** Keeps `kid` published until `exp` (a long-lived service token was signed with it). */
  extendPublication(kid: string, exp: Date): Promise<void>;
  /** Registers a function called when a key leaves the set. */
  onKeyWithdrawn(listener: () => void): void;
}

interface Row {
  kid: string;
  public_jwk: JWK;
  private_key: Buffer;
  active_from: Date;
  tokens_until: Date | null;
}

interface Loaded {
  readonly kid: string;
  readonly jwk: JWK;
  readonly publicKey: CryptoKey;
  privateKey: CryptoKey | undefined;
  readonly activeFrom: number;
  /** Infinity while no successor is active. */
  publishedUntil: number;
}

/** When each key stops being published, given rows sorted by active_from. */
function publicationEnds(rows: readonly Row[], accessTtlMs: number): number[] {
  return rows.map((r, i) => {
    const next = rows[i + 1];
    if (next === undefined) return Infinity;
    return Math.max(next.active_from.getTime() + accessTtlMs + SKEW_MS, r.tokens_until?.getTime() ?? 0);
  });
}

async function newKeyRow(masterKey: Buffer, activeFrom: Date): Promise<Row> {
  const { publicKey, privateKey } = await generateKeyPair(ACCESS_TOKEN_ALG, { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  const pkcs8 = Buffer.from(await exportPKCS8(privateKey));
  return {
    kid,
    public_jwk: { ...jwk, kid, alg: ACCESS_TOKEN_ALG, use: "sig" },
    private_key: seal(masterKey, pkcs8, kid),
    active_from: activeFrom,
    tokens_until: null,
  };
}

/** Creates the key store; call `maintain()` before first use. */
export function createKeyStore(options: KeyStoreOptions): KeyStore {
  const { db, masterKey, log } = options;
  const now = options.now ?? Date.now;
  const ttlMs = options.accessTtlS * 1000;
  let loaded: Loaded[] = []; // sorted by activeFrom
  const listeners: Array<() => void> = [];

  const published = (k: Loaded, t: number) => t < k.publishedUntil;

  async function insert(tx: TransactionSql, activeFrom: Date): Promise<void> {
    const r = await newKeyRow(masterKey, activeFrom);
    await tx`insert into auth.signing_keys (kid, alg, public_jwk, private_key, active_from)
             values (${r.kid}, ${ACCESS_TOKEN_ALG}, ${tx.json(r.public_jwk as never)}, ${r.private_key}, ${activeFrom})`;
    log.info({ kid: r.kid, activeFrom: activeFrom.toISOString() }, "signing key created");
  }

  async function load(rows: Row[]): Promise<void> {
    const ends = publicationEnds(rows, ttlMs);
    const t = now();
    const previous = new Map(loaded.map((k) => [k.kid, k]));
    const next: Loaded[] = [];
    for (const [i, r] of rows.entries()) {
      const old = previous.get(r.kid);
      const canSign = ends[i] === Infinity || r.active_from.getTime() > t || rows[i + 1]!.active_from.getTime() > t;
      let privateKey = old?.privateKey;
      if (privateKey === undefined && canSign) {
        let pkcs8: Buffer;
        try {
          pkcs8 = unseal(masterKey, r.private_key, r.kid);
        } catch {
          throw new Error(`AUTH_MASTER_KEY cannot decrypt signing key ${r.kid} in auth.signing_keys: was the master key changed?`);
        }
        privateKey = await importPKCS8(pkcs8.toString(), ACCESS_TOKEN_ALG);
      }
      next.push({
        kid: r.kid,
        jwk: r.public_jwk,
        publicKey: old?.publicKey ?? ((await importJWK(r.public_jwk, ACCESS_TOKEN_ALG)) as CryptoKey),
        privateKey,
        activeFrom: r.active_from.getTime(),
        publishedUntil: ends[i]!,
      });
    }
    const withdrawn = loaded.some((k) => !next.some((n) => n.kid === k.kid));
    loaded = next;
    if (withdrawn) for (const l of listeners) l();
  }

  async function locked(fn: (tx: TransactionSql, rows: Row[]) => Promise<void>): Promise<void> {
    const rows = await db.tx(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext('auth.signing_keys'))`;
      const read = () => tx<Row[]>`select kid, public_jwk, private_key, active_from, tokens_until
                                   from auth.signing_keys order by active_from, kid`;
      await fn(tx, await read());
      return read();
    });
    await load(rows);
  }

  return {
    keys: async (header) => {
      const t = now();
      const k = loaded.find((x) => x.kid === header.kid);
      if (k === undefined || !published(k, t)) throw new errors.JWKSNoMatchingKey();
      return k.publicKey;
    },
    signer() {
      const t = now();
      let active: Loaded | undefined;
      for (const k of loaded) if (k.activeFrom <= t && k.privateKey !== undefined) active = k;
      if (active === undefined) throw new Error("no signing key is loaded: the key store was not maintained");
      return { kid: active.kid, privateKey: active.privateKey! };
    },
    jwks() {
      const t = now();
      return { keys: loaded.filter((k) => published(k, t)).reverse().map((k) => k.jwk) };
    },
    maintain: () =>
      locked(async (tx, rows) => {
        const t = now();
        const ends = publicationEnds(rows, ttlMs);
        const gone = rows.filter((_, i) => ends[i]! <= t).map((r) => r.kid);
        if (gone.length > 0) {
          await tx`delete from auth.signing_keys where kid in ${tx(gone)}`;
          log.info({ kids: gone }, "signing keys withdrawn: their last tokens have expired");
        }
        const active = rows.filter((r) => r.active_from.getTime() <= t).at(-1);
        const pending = rows.some((r) => r.active_from.getTime() > t);
        if (active === undefined) {
          if (!pending) await insert(tx, new Date(t));
        } else if (!pending && active.active_from.getTime() + options.rotationIntervalMs - options.prepublishMs <= t) {
          await insert(tx, new Date(Math.max(t + options.prepublishMs, active.active_from.getTime() + options.rotationIntervalMs)));
        }
      }),
    rotateNow: () => locked((tx) => insert(tx, new Date(now()))),
    async extendPublication(kid, exp) {
      await db.sql`update auth.signing_keys set tokens_until = greatest(tokens_until, ${exp}) where kid = ${kid}`;
    },
    onKeyWithdrawn: (l) => void listeners.push(l),
  };
}
