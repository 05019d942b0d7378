/**
 * What the storage tests share: a storage process (startProcess, in this
 * test process) on its own database, with tokens signed by a test key whose
 * JWKS it fetches (AUTH_JWKS_URL, as in production when auth runs
 * elsewhere), and clients acting as a user or as a service.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomBytes } from "node:crypto";
import type { Writable } from "node:stream";
import { BackupService } from "../../gen/switchyard/storage/v1/backup_pb.js";
import { RecordService } from "../../gen/switchyard/storage/v1/record_pb.js";
import { VectorService } from "../../gen/switchyard/storage/v1/vector_pb.js";
import { createLogger, readPlatformSettings, type RunningProcess, startProcess } from "../../platform/index.js";
import { createStorageModule, type StorageModuleOptions } from "../../services/storage/module.js";
import { bearer } from "../../services/auth/testing.js";
import { startTestKeys, type TestKeys } from "../gateway/support.js";
import { createTestDatabase } from "../support/infra.js";

/** Clients of the three storage services, all carrying one token. */
export interface StorageClients {
  readonly records: Client<typeof RecordService>;
  readonly vectors: Client<typeof VectorService>;
  readonly backups: Client<typeof BackupService>;
}

/** A user with their id and clients. */
export interface TestUser extends StorageClients {
  readonly id: string;
  readonly token: string;
}

/** A running storage process and ways to call it. */
export interface StorageUnderTest {
  readonly proc: RunningProcess;
  readonly baseUrl: string;
  readonly databaseUrl: string;
  readonly masterKey: string;
  readonly keys: TestKeys;
  /** A fresh user (random id) on `tier` (default free). */
  user(tier?: string): Promise<TestUser>;
  /** Clients carrying a service token (roles ["service"]). */
  service(name?: string): Promise<StorageClients>;
  /** Clients carrying `token`. */
  clients(token: string): StorageClients;
  stop(): Promise<void>;
}

/** Options of `startStorage`. */
export interface StartStorageOptions {
  /** STORAGE_* variables over the test defaults (a fresh master key). */
  readonly storageEnv?: Record<string, string>;
  /** Use this database instead of a fresh one (kept at stop). */
  readonly databaseUrl?: string;
  /** Platform variables over the defaults (e.g. DATABASE_URL "" and DATA_DIR for the embedded PostgreSQL). */
  readonly platformEnv?: Record<string, string>;
  readonly logTo?: Writable;
  readonly moduleOptions?: StorageModuleOptions;
  readonly keys?: TestKeys;
}

/** Starts storage on a fresh database (unless given one). */
export async function startStorage(options: StartStorageOptions = {}): Promise<StorageUnderTest> {
  const keys = options.keys ?? (await startTestKeys());
  const testDb = options.databaseUrl === undefined && options.platformEnv?.DATABASE_URL === undefined ? await createTestDatabase("sy_storage") : undefined;
  const databaseUrl = options.platformEnv?.DATABASE_URL ?? options.databaseUrl ?? testDb!.url;
  const masterKey = options.storageEnv?.STORAGE_MASTER_KEY ?? randomBytes(32).toString("base64");
  const level = options.logTo ? "info" : "silent";
  const settings = readPlatformSettings({
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_LEVEL: level,
    SHUTDOWN_GRACE_MS: "500",
    DATABASE_URL: databaseUrl,
    DATABASE_POOL_MAX: "8",
    RATE_LIMIT_ENABLED: "false",
    AUTH_JWKS_URL: keys.jwksUrl,
    ...options.platformEnv,
  });
  const storageEnv = { DATABASE_URL: databaseUrl, ...options.platformEnv, STORAGE_MASTER_KEY: masterKey, ...options.storageEnv };
  const module = createStorageModule(storageEnv, options.moduleOptions);
  const proc = await startProcess([module], settings, createLogger(level, options.logTo));
  const baseUrl = `http://127.0.0.1:${proc.port}`;
  const clients = (token: string): StorageClients => {
    const transport = createGrpcTransport({ baseUrl, interceptors: [bearer(token)] });
    return { records: createClient(RecordService, transport), vectors: createClient(VectorService, transport), backups: createClient(BackupService, transport) };
  };
  return {
    proc,
    baseUrl,
    databaseUrl,
    masterKey,
    keys,
    clients,
    async user(tier = "free") {
      const id = `u${randomBytes(6).toString("hex")}`;
      const token = await keys.mint(id, { tier, ttlS: 3600 });
      return { id, token, ...clients(token) };
    },
    async service(name = "chat") {
      return clients(await keys.mint(`service:${name}`, { roles: ["service"], ttlS: 3600 }));
    },
    async stop() {
      await proc.stop();
      if (options.keys === undefined) await keys.close();
      await testDb?.drop();
    },
  };
}

/** The error a call fails with (fails the test if it succeeds). */
export async function failure(p: Promise<unknown>): Promise<import("@connectrpc/connect").ConnectError> {
  const { ConnectError } = await import("@connectrpc/connect");
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}
