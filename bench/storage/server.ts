/**
 * The storage server of bench/storage, in its own process: the storage
 * module as `npm start` runs it, configured from the environment
 * (DATABASE_URL or DATA_DIR, STORAGE_*, AUTH_JWKS_URL). Prints "port N" once
 * it serves.
 */
import { createLogger, readPlatformSettings, startProcess } from "../../platform/index.js";
import { createStorageModule } from "../../services/storage/module.js";

const settings = readPlatformSettings({ ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", RATE_LIMIT_ENABLED: "false" });
const proc = await startProcess([createStorageModule(process.env)], settings, createLogger("silent"));
process.stdout.write(`port ${proc.port}\n`);
