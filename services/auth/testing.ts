/**
 * Test support for the auth service: a real process (startProcess) running
 * auth on its own PostgreSQL database and its own nats-server (so durable
 * consumers of other test files never take its events), with clients for
 * it. Used by the auth tests and bench/auth.
 */
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomBytes } from "node:crypto";
import type { Writable } from "node:stream";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { createLogger, readPlatformSettings, type RunningProcess, type ServiceModule, startProcess } from "../../platform/index.js";
import { createTestDatabase, startNats, type OwnNats } from "../../test/support/infra.js";
import { createAuthModule } from "./module.js";

/** A running auth process and what it runs on. */
export interface AuthUnderTest {
  readonly proc: RunningProcess;
  readonly port: number;
  readonly baseUrl: string;
  readonly databaseUrl: string;
  readonly nats: OwnNats;
  /** A gRPC (h2c) client; `token` (or `as(token)`) adds the Authorization header. */
  readonly client: Client<typeof AuthService>;
  /** A client sending "authorization: Bearer <token>" on every call. */
  as(token: string): Client<typeof AuthService>;
  /** Stops the process, then drops its database and kills its nats-server. */
  stop(): Promise<void>;
}

/** Options of `startAuth`. */
export interface StartAuthOptions {
  /** Auth variables (AUTH_*), over test defaults (a fresh master key, no rate limits on users). */
  readonly authEnv?: Record<string, string>;
  /** Platform variables over the defaults. */
  readonly platformEnv?: Record<string, string>;
  /** Where the process's logs go (default: nowhere). */
  readonly logTo?: Writable;
  readonly logLevel?: string;
  /** More modules to run in the same process. */
  readonly modules?: readonly ServiceModule[];
}

/** A client whose calls carry `token`. */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** Starts auth on a fresh database and a private nats-server. */
export async function startAuth(options: StartAuthOptions = {}): Promise<AuthUnderTest> {
  const testDb = await createTestDatabase("sy_auth");
  const nats = await startNats();
  const level = options.logLevel ?? "silent";
  const log = createLogger(level, options.logTo);
  const settings = readPlatformSettings({
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_LEVEL: level,
    SHUTDOWN_GRACE_MS: "500",
    DATABASE_URL: testDb.url,
    DATABASE_POOL_MAX: "8",
    NATS_URL: nats.url,
    RATE_LIMIT_ENABLED: "false",
    ...options.platformEnv,
  });
  const module = createAuthModule({ AUTH_MASTER_KEY: randomBytes(32).toString("base64"), ...options.authEnv });
  let proc: RunningProcess;
  try {
    proc = await startProcess([module, ...(options.modules ?? [])], settings, log);
  } catch (err) {
    await nats.kill();
    await testDb.drop();
    throw err;
  }
  const baseUrl = `http://127.0.0.1:${proc.port}`;
  return {
    proc,
    port: proc.port,
    baseUrl,
    databaseUrl: testDb.url,
    nats,
    client: createClient(AuthService, createGrpcTransport({ baseUrl })),
    as: (token) => createClient(AuthService, createGrpcTransport({ baseUrl, interceptors: [bearer(token)] })),
    async stop() {
      await proc.stop();
      await nats.kill();
      await testDb.drop();
    },
  };
}
