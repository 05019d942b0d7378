/**
 * The auth service: accounts, credentials, tokens, signing keys and the JWKS.
 * When it runs in a process it also gives that process's token check its key
 * set in memory, and mints the process's service tokens.
 */
import { join } from "node:path";
import { MAX_ACCESS_TOKEN_TTL_S, type ServiceModule } from "../../platform/index.js";
import { createAuthHandlers } from "./handlers.js";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { jwksRoute, jwksRouteDeclaration } from "./jwks-route.js";
import { createKeyStore } from "./key-store.js";
import { loadMasterKey } from "./master-key.js";
import { createPasswordHasher } from "./passwords.js";
import { createRefreshTokens } from "./refresh-tokens.js";
import { authVars, readAuthSettings } from "./settings.js";
import { createThrottle } from "./throttle.js";
import { consumeTierChanges } from "./tier-consumer.js";
import { createTokenIssuer } from "./tokens.js";

/** How often each instance reloads keys and rotates them when due. */
const MAINTAIN_EVERY_MS = 60_000;
/** How long a new key is published before it signs: longer than any JWKS cache (5 min here, 10 min in verifiers). */
const PREPUBLISH_MS = 60 * 60_000;
const DAY_MS = 24 * 60 * 60_000;

/**
 * The auth module, reading its variables (see settings.ts) from `source` at
 * start; tests pass their own.
 */
export function createAuthModule(source: NodeJS.ProcessEnv = process.env): ServiceModule {
  return {
    name: "auth",
    settings: authVars,
    summary: "argon2id passwords, ES256 access tokens (15 min), rotating refresh tokens, login throttling; keys encrypted under `AUTH_MASTER_KEY`",
    serves: [AuthService],
    routes: [jwksRouteDeclaration],
    migrations: new URL("./migrations/", import.meta.url),
    uses: ["db", "events"],
    async start(ctx) {
      const s = readAuthSettings(source);
      const { db, events, log } = ctx;
      // Only the embedded development database may run on a generated master key (see master-key.ts).
      const devKeyFile = source.DATABASE_URL ? undefined : join(source.DATA_DIR || ".data", "auth-master-key");
      const keys = createKeyStore({
        db,
        masterKey: loadMasterKey(s.AUTH_MASTER_KEY, devKeyFile, log),
        // Retired keys stay published for the longest lifetime a token may ever have had, so lowering
        // AUTH_ACCESS_TOKEN_TTL_S never withdraws a key while tokens minted before the change are valid.
        accessTtlS: MAX_ACCESS_TOKEN_TTL_S,
        rotationIntervalMs: s.AUTH_KEY_ROTATION_HOURS * 60 * 60_000,
        prepublishMs: PREPUBLISH_MS,
        log,
      });
      await keys.maintain();
      const tokens = createTokenIssuer({ keys, issuer: ctx.auth.issuer, audience: ctx.auth.audience, accessTtlS: s.AUTH_ACCESS_TOKEN_TTL_S });
      ctx.auth.provideLocal({
        keys: keys.keys,
        onKeyWithdrawn: keys.onKeyWithdrawn,
        issueServiceToken: async (name) => {
          const t = await tokens.issueService(name);
          return { token: t.token, expiresAt: t.expiresAt.getTime() };
        },
      });
      const refresh = createRefreshTokens(db, s.AUTH_REFRESH_TOKEN_TTL_DAYS * DAY_MS);
      const throttle = createThrottle(db);
      const handlers = createAuthHandlers({
        db,
        events,
        passwords: await createPasswordHasher({ memoryKiB: s.AUTH_ARGON2_MEMORY_KIB, timeCost: s.AUTH_ARGON2_TIME_COST }),
        tokens,
        refresh,
        throttle,
        limits: {
          loginPerAccount: s.AUTH_LOGIN_MAX_PER_ACCOUNT,
          loginPerAddress: s.AUTH_LOGIN_MAX_PER_ADDRESS,
          loginWindowMs: s.AUTH_LOGIN_WINDOW_MS,
          registerPerAddress: s.AUTH_REGISTER_MAX_PER_ADDRESS,
          registerWindowMs: s.AUTH_REGISTER_WINDOW_MS,
        },
        trustedProxyHops: s.AUTH_TRUSTED_PROXY_HOPS,
      });
      const stopConsumer = await consumeTierChanges(events, log);

      let ticks = 0;
      const timer = setInterval(() => {
        const hourly = ++ticks % 60 === 0;
        keys
          .maintain()
          .then(async () => {
            if (hourly) await Promise.all([refresh.prune(), throttle.prune(Math.max(s.AUTH_LOGIN_WINDOW_MS, s.AUTH_REGISTER_WINDOW_MS))]);
          })
          .catch((err: unknown) => log.error({ err: String(err) }, "auth maintenance failed; retrying in a minute"));
      }, MAINTAIN_EVERY_MS);
      timer.unref();

      return {
        services: [handlers],
        routes: [jwksRoute(keys)],
        async stop() {
          clearInterval(timer);
          await stopConsumer();
        },
      };
    },
  };
}

/** The auth module as `npm start` runs it, configured from the environment. */
export const auth: ServiceModule = createAuthModule();
