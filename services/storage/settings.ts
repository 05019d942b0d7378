/**
 * The storage service's variables: the key-encryption keys, the blob backend,
 * the embeddings provider, and the per-tier quotas.
 */
import { type ConfigOf, env, int, list, readConfig, url } from "../../platform/index.js";
import { parseKeyList } from "./keyring.js";

/** Four numbers, one per tier: free, pro, power, team. */
function perTier(min: number, max: number) {
  const item = int(min, max);
  return (raw: string): readonly [number, number, number, number] => {
    const values = list(item)(raw);
    if (values.length !== 4) throw new Error(`expected four comma-separated numbers (free,pro,power,team), got ${values.length}`);
    return values as unknown as [number, number, number, number];
  };
}

const MiB = 1024 * 1024;

/** The storage variables, each with its description, parser and default (read at start by `readStorageSettings`). */
export const storageVars = {
  STORAGE_MASTER_KEY: env(
    "key-encryption key(s): 32 random bytes in base64 (openssl rand -base64 32), comma-separated, the first wrapping new data keys and " +
      "all unwrapping (put the new key first, then run `npm run storage:rotate-key`); required with DATABASE_URL; without both, " +
      "a development key is generated into DATA_DIR (.data/storage-master-key)",
    (raw) => (parseKeyList(raw), raw),
    "",
    true,
  ),
  STORAGE_S3_ENDPOINT: env("S3-compatible endpoint for blobs (record bytes, backups), e.g. http://minio:9000; empty = blobs in PostgreSQL", url("http", "https"), ""),
  STORAGE_S3_BUCKET: env("S3 bucket holding the blobs (created when missing)", (raw) => raw, "switchyard-storage"),
  STORAGE_S3_REGION: env("S3 region", (raw) => raw, "us-east-1"),
  STORAGE_S3_ACCESS_KEY_ID: env("S3 access key id", (raw) => raw, "", true),
  STORAGE_S3_SECRET_ACCESS_KEY: env("S3 secret access key", (raw) => raw, "", true),
  STORAGE_BLOB_GRACE_MS: env(
    "how long an unreferenced blob (an upload whose row never committed, or a replaced version) is kept before the sweeper deletes it",
    int(0, 7 * 24 * 3600_000),
    15 * 60_000,
  ),
  STORAGE_QUOTA_RECORDS: env("records a user may keep, per tier (free,pro,power,team)", perTier(1, 1e9), [1_000, 10_000, 100_000, 1_000_000] as const),
  STORAGE_QUOTA_BYTES: env(
    "record ciphertext bytes a user may keep, per tier (free,pro,power,team)",
    perTier(1, 2 ** 50),
    [100 * MiB, 1024 * MiB, 10 * 1024 * MiB, 100 * 1024 * MiB] as const,
  ),
  STORAGE_QUOTA_VECTORS: env("vectors a user may keep, per tier (free,pro,power,team)", perTier(1, 1e9), [10_000, 100_000, 1_000_000, 5_000_000] as const),
  STORAGE_BACKUP_MAX_BYTES: env(
    "largest a user's data may be for CreateBackup, bytes (record ciphertext plus 4 per vector dimension, counted before anything is read); " +
      "an archive is assembled in this process's memory, about 3 times this at its peak, so larger data is refused with FAILED_PRECONDITION",
    int(MiB, 256 * MiB),
    64 * MiB,
  ),
  STORAGE_BACKUPS_KEEP: env("backups kept per user, per tier (free,pro,power,team); the oldest beyond go", perTier(1, 10_000), [1, 5, 20, 50] as const),
  EMBEDDINGS_BASE_URL: env(
    "OpenAI-compatible embeddings API (e.g. https://api.openai.com/v1); empty = the built-in deterministic feature-hashing embedder",
    url("http", "https"),
    "",
  ),
  EMBEDDINGS_API_KEY: env("API key of EMBEDDINGS_BASE_URL", (raw) => raw, "", true),
  EMBEDDINGS_MODEL: env("embedding model asked of EMBEDDINGS_BASE_URL", (raw) => raw, "text-embedding-3-small"),
};

/** The storage service's parsed variables. */
export type StorageSettings = ConfigOf<typeof storageVars>;

/** Reads the storage variables from `source`; throws ConfigError naming each bad one. */
export function readStorageSettings(source: NodeJS.ProcessEnv = process.env): StorageSettings {
  return readConfig(storageVars, source);
}
