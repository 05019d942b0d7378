/**
 * Auth as one process sees it: where its token check gets keys, and where its
 * services get the service tokens they send on internal calls.
 *
 * When the auth service runs in the process it hands over its key set and its
 * token minting (`provideLocal`): tokens are then checked against the keys in
 * memory and service tokens are minted on demand. Otherwise the keys come from
 * AUTH_JWKS_URL and the service token from AUTH_SERVICE_TOKEN.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { decodeJwt, type JWTVerifyGetKey } from "jose";
import { createRemoteKeys } from "./remote-keys.js";
import { createAccessTokenVerifier, type AccessTokenVerifier } from "./verifier.js";

/** What the auth service provides to the process it runs in. */
export interface LocalAuthority {
  /** The public keys of the current key set, by kid. */
  readonly keys: JWTVerifyGetKey;
  /** Mints a short-lived token with roles ["service"] and sub "service:<service>". */
  issueServiceToken(service: string): Promise<{ token: string; expiresAt: number }>;
  /** Registers a function called whenever a key leaves the key set. */
  onKeyWithdrawn(listener: () => void): void;
}

/** The settings ProcessAuth reads (part of the platform settings). */
export interface ProcessAuthSettings {
  readonly AUTH_ISSUER: string;
  readonly AUTH_AUDIENCE: string;
  readonly AUTH_JWKS_URL: string;
  readonly AUTH_SERVICE_TOKEN: string;
}

/** Where a service's outgoing internal calls get their token. */
export interface ServiceTokenSource {
  /** A valid service token; rejects with UNAUTHENTICATED saying what to configure when there is none. */
  token(): Promise<string>;
  /** A connect interceptor that sets "authorization: Bearer <service token>" on every call. */
  readonly interceptor: Interceptor;
}

/** The process's auth wiring, created by startProcess and handed to every module. */
export interface ProcessAuth {
  /** AUTH_ISSUER: the `iss` tokens are issued with and required to have. */
  readonly issuer: string;
  /** AUTH_AUDIENCE: the `aud` tokens are issued with and required to have. */
  readonly audience: string;
  /** Called by the auth module when it starts in this process. */
  provideLocal(authority: LocalAuthority): void;
  /**
   * The verifier the token check uses: in-process keys, else AUTH_JWKS_URL,
   * else undefined. Ask for it once every module has started (startProcess
   * does), or at call time (e.g. on a WebSocket upgrade), not during a
   * module's start: auth may not have provided its keys yet.
   */
  verifier(): AccessTokenVerifier | undefined;
  /** The service-token source of `service` (a module name), for its calls to INTERNAL RPCs. */
  serviceTokens(service: string): ServiceTokenSource;
}

/** Minted tokens are replaced this long before they expire, so none expires in flight. */
const renewMarginMs = 60_000;

/** Creates the process's auth wiring. */
export function createProcessAuth(settings: ProcessAuthSettings): ProcessAuth {
  let local: LocalAuthority | undefined;
  let verifier: AccessTokenVerifier | undefined;

  const sources = new Map<string, ServiceTokenSource>();
  function minted(service: string): () => Promise<string> {
    let current: { token: string; expiresAt: number } | undefined;
    let pending: Promise<string> | undefined;
    return () => {
      if (current !== undefined && current.expiresAt - renewMarginMs > Date.now()) return Promise.resolve(current.token);
      return (pending ??= local!
        .issueServiceToken(service)
        .then((t) => {
          current = t;
          return t.token;
        })
        .finally(() => (pending = undefined)));
    };
  }
  function fromEnv(): Promise<string> {
    const token = settings.AUTH_SERVICE_TOKEN;
    if (token === "") {
      return Promise.reject(
        new ConnectError(
          "this process has no service token for internal calls: run auth in the same process, or set AUTH_SERVICE_TOKEN " +
            "(mint one with `npm run auth:service-token -- <service>`)",
          Code.Unauthenticated,
        ),
      );
    }
    let exp: number | undefined;
    try {
      exp = decodeJwt(token).exp;
    } catch {
      return Promise.reject(new ConnectError("AUTH_SERVICE_TOKEN is not a JWT; mint one with `npm run auth:service-token -- <service>`", Code.Unauthenticated));
    }
    if (exp !== undefined && exp * 1000 <= Date.now()) {
      return Promise.reject(new ConnectError("AUTH_SERVICE_TOKEN has expired; mint a new one with `npm run auth:service-token -- <service>`", Code.Unauthenticated));
    }
    return Promise.resolve(token);
  }

  return {
    issuer: settings.AUTH_ISSUER,
    audience: settings.AUTH_AUDIENCE,
    provideLocal(authority) {
      local = authority;
      verifier = undefined;
    },
    verifier() {
      if (verifier !== undefined) return verifier;
      const common = { issuer: settings.AUTH_ISSUER, audience: settings.AUTH_AUDIENCE };
      if (local !== undefined) {
        const v = createAccessTokenVerifier({ ...common, keys: local.keys });
        local.onKeyWithdrawn(() => v.clearCache());
        return (verifier = v);
      }
      if (settings.AUTH_JWKS_URL !== "") return (verifier = createAccessTokenVerifier({ ...common, keys: createRemoteKeys(settings.AUTH_JWKS_URL) }));
      return undefined;
    },
    serviceTokens(service) {
      let source = sources.get(service);
      if (source === undefined) {
        const mint = minted(service);
        const token = () => (local !== undefined ? mint() : fromEnv());
        source = {
          token,
          interceptor: (next) => async (req) => {
            req.header.set("authorization", `Bearer ${await token()}`);
            return next(req);
          },
        };
        sources.set(service, source);
      }
      return source;
    },
  };
}
