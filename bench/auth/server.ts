/**
 * The auth server of bench/auth, in its own process, in one of three modes
 * that differ only in the one middleware where the platform puts its token
 * check (the chain is assembled as startProcess does it):
 *
 *   nocheck        a middleware that sets a fixed principal, verifying nothing
 *   check          the platform token check as deployed (verified tokens cached)
 *   check-nocache  the token check verifying every call's ES256 signature
 *
 * Run as `tsx bench/auth/server.ts <mode>` with DATABASE_URL, NATS_URL and
 * AUTH_MASTER_KEY set; prints "port N" once it serves.
 */
import { principalKey } from "../../platform/auth/principal.js";
import { createProcessAuth, type LocalAuthority } from "../../platform/auth/process-auth.js";
import { createTokenCheck } from "../../platform/auth/token-check.js";
import { createAccessTokenVerifier } from "../../platform/auth/verifier.js";
import { createCors } from "../../platform/cors.js";
import { startDependencies } from "../../platform/dependencies.js";
import { createLogger } from "../../platform/log.js";
import { createMetrics } from "../../platform/metrics.js";
import type { Middleware } from "../../platform/rpc/pipeline.js";
import { createPlatformServer } from "../../platform/server.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { createAuthModule } from "../../services/auth/module.js";

const mode = process.argv[2] as "nocheck" | "check" | "check-nocache";
const settings = readPlatformSettings({ ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", RATE_LIMIT_ENABLED: "false" });
const log = createLogger("silent");
const metrics = createMetrics();
const auth = createProcessAuth(settings);
let local: LocalAuthority | undefined;
const provide = auth.provideLocal;
auth.provideLocal = (a) => {
  local = a;
  provide(a);
};
const module = createAuthModule({
  ...process.env,
  AUTH_LOGIN_MAX_PER_ACCOUNT: "1000000",
  AUTH_LOGIN_MAX_PER_ADDRESS: "1000000",
  AUTH_REGISTER_MAX_PER_ADDRESS: "1000000",
});
const deps = await startDependencies([module], settings, log);
const parts = await module.start(
  deps.provide({ instanceId: settings.INSTANCE_ID, port: 0, serviceUrl: () => { throw new Error("auth calls no module"); }, log, metrics, shutdownSignal: new AbortController().signal, auth }, module),
);
const services = parts.services.map((s) => s.service);
const fixed = { userId: process.env.BENCH_USER_ID ?? "", tier: 1, roles: [], expiresAt: Date.now() + 3600_000 };
const check: Middleware =
  mode === "nocheck"
    ? (_method, next) => (call) => {
        call.ctx.values.set(principalKey, fixed);
        return next(call);
      }
    : createTokenCheck(
        services,
        mode === "check"
          ? auth.verifier()
          : createAccessTokenVerifier({ keys: local!.keys, issuer: auth.issuer, audience: auth.audience, cacheSize: 0 }),
      );
const server = createPlatformServer({
  services: parts.services,
  routes: parts.routes ?? [],
  middleware: [deps.errors, check, ...deps.limits],
  readiness: {},
  cors: createCors(settings.ALLOWED_ORIGINS),
  readMaxBytes: settings.READ_MAX_BYTES,
  writeMaxBytes: settings.WRITE_MAX_BYTES,
  log,
  metrics,
});
const port = await server.listen(0, "127.0.0.1");
process.stdout.write(`port ${port}\n`);
