/**
 * `npm run storage:rotate-key`: re-wraps every record's and backup's data key
 * under the first key of STORAGE_MASTER_KEY, online (see rotation.ts).
 *
 * To rotate: generate a key (openssl rand -base64 32); set
 * STORAGE_MASTER_KEY="<new>,<old>" everywhere and restart (new data keys are
 * wrapped by <new>, old ones still unwrap); run this; then drop <old>.
 * Reads DATABASE_URL and STORAGE_MASTER_KEY; prints what it did.
 */
import { ConfigError, createDatabase, createLogger, readPlatformSettings } from "../../platform/index.js";
import { loadKeyring } from "./keyring.js";
import { rotateDataKeys } from "./rotation.js";
import { readStorageSettings } from "./settings.js";

try {
  const platform = readPlatformSettings();
  const storage = readStorageSettings();
  if (platform.DATABASE_URL === "") throw new ConfigError(["DATABASE_URL is required: the data keys are in storage's tables"]);
  const log = createLogger(process.env.LOG_LEVEL ?? "warn");
  const keyring = loadKeyring(storage.STORAGE_MASTER_KEY, undefined, log);
  const db = createDatabase(platform.DATABASE_URL, { max: 2, applicationName: "switchyard-storage-rotate-key" });
  try {
    const done = await rotateDataKeys(db, keyring, log);
    process.stdout.write(`re-wrapped ${done.records} record data keys and ${done.backups} backup data keys under key-encryption key ${done.kekId}\n`);
  } finally {
    await db.close();
  }
} catch (err) {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`storage:rotate-key: ${message}\n`);
  process.exit(1);
}
