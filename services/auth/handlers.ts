/**
 * The AuthService RPCs. Request rules (lengths, email format, required
 * fields) are checked by the platform from the contract before these run;
 * what is checked here is what the contract cannot say.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { createHash, randomUUID } from "node:crypto";
import { AuthService, TokensSchema, type Tokens } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { UserLoggedInSchema, UserRegisteredSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { clientAddress, type Database, type Events, principalOf as caller, register, type ServiceRegistration, type TransactionSql } from "../../platform/index.js";
import type { PasswordHasher } from "./passwords.js";
import type { IssuedRefreshToken, RefreshTokens } from "./refresh-tokens.js";
import type { Throttle } from "./throttle.js";
import type { IssuedToken, TokenIssuer } from "./tokens.js";
import { findUserByEmail, findUserById, foldEmail, insertUser, replacePasswordHash, toUser, updateProfile, type UserRow } from "./users.js";

/** What the handlers are built from. */
export interface AuthHandlerDeps {
  readonly db: Database;
  readonly events: Events;
  readonly passwords: PasswordHasher;
  readonly tokens: TokenIssuer;
  readonly refresh: RefreshTokens;
  readonly throttle: Throttle;
  /** Attempts allowed per window: sign-ins per account and per client address, registrations per address. */
  readonly limits: {
    readonly loginPerAccount: number;
    readonly loginPerAddress: number;
    readonly loginWindowMs: number;
    readonly registerPerAddress: number;
    readonly registerWindowMs: number;
  };
  /** Proxies whose x-forwarded-for is believed (see platform/auth/client-address.ts). */
  readonly trustedProxyHops: number;
}

/** The one answer to a failed sign-in, whether the email is unknown or the password wrong. */
const badCredentials = () => new ConnectError("the email or the password is wrong", Code.Unauthenticated);

const updatable = new Set(["display_name", "email"]);

/**
 * Throttle key of an email as folded by `foldEmail` (the fold that finds the account, so every
 * spelling of one account shares one budget); hashed, so no address is stored for emails that
 * have no account.
 */
function accountKey(foldedEmail: string): string {
  return `login-account:${createHash("sha256").update(foldedEmail).digest("base64url")}`;
}

/** Creates the AuthService registration. */
export function createAuthHandlers(deps: AuthHandlerDeps): ServiceRegistration {
  const { db, events, passwords, tokens, refresh, throttle, limits } = deps;

  const mintAccess = (user: UserRow) => tokens.issueUser({ id: user.id, tier: user.tier, roles: user.roles });

  function pairOf(access: IssuedToken, next: IssuedRefreshToken): Tokens {
    return create(TokensSchema, {
      accessToken: access.token,
      accessTokenExpireTime: timestampFromDate(access.expiresAt),
      refreshToken: next.token,
      refreshTokenExpireTime: timestampFromDate(next.expiresAt),
      tokenType: "Bearer",
    });
  }

  /** A new sign-in inside `tx`: a new token family and its first tokens. */
  async function signIn(tx: TransactionSql, user: UserRow): Promise<Tokens> {
    const family = await refresh.startFamily(tx, user.id);
    return pairOf(await mintAccess(user), family);
  }

  return register(AuthService, {
    async register(req, ctx) {
      const address = clientAddress(ctx, deps.trustedProxyHops);
      await throttle.attempt([{ key: `register-address:${address}`, max: limits.registerPerAddress }], limits.registerWindowMs, "too many registrations from this address");
      const passwordHash = await passwords.hash(req.password);
      return db.tx(async (tx) => {
        const user = await insertUser(tx, { id: randomUUID(), email: req.email, displayName: req.displayName, passwordHash });
        const pair = await signIn(tx, user);
        await events.publish(
          tx,
          UserRegisteredSchema,
          create(UserRegisteredSchema, {
            userId: user.id,
            email: user.email,
            displayName: user.display_name,
            tier: user.tier,
            occurTime: timestampFromDate(user.created_at),
          }),
        );
        return { user: toUser(user), tokens: pair };
      });
    },

    async login(req, ctx) {
      const account = accountKey(await foldEmail(db.sql, req.email));
      const address = `login-address:${clientAddress(ctx, deps.trustedProxyHops)}`;
      await throttle.attempt(
        [
          { key: account, max: limits.loginPerAccount },
          { key: address, max: limits.loginPerAddress },
        ],
        limits.loginWindowMs,
        "too many sign-in attempts for this account or from this address",
      );
      // Unknown email and wrong password take the same path: one lookup, one argon2 verification.
      const user = await findUserByEmail(db.sql, req.email);
      const ok = await passwords.verify(user?.password_hash, req.password);
      if (!ok || user === undefined) throw badCredentials();
      const rehashed = passwords.needsRehash(user.password_hash) ? await passwords.hash(req.password) : undefined;
      return db.tx(async (tx) => {
        await throttle.settle(tx, { reset: [account], forgive: [address] });
        if (rehashed !== undefined) await replacePasswordHash(tx, user.id, user.password_hash, rehashed);
        const pair = await signIn(tx, user);
        await events.publish(tx, UserLoggedInSchema, create(UserLoggedInSchema, { userId: user.id, occurTime: timestampFromDate(new Date()) }));
        return { tokens: pair, user: toUser(user) };
      });
    },

    async refresh(req) {
      // The access token is minted inside the rotation's transaction: if that fails, the refresh
      // token stays unspent and a retry works, instead of being taken for reuse and revoking the family.
      const { next, result: access } = await refresh.rotate(req.refreshToken, async (tx, userId) => {
        const row = await findUserById(tx, userId);
        if (row === undefined) throw new ConnectError("the refresh token's user no longer exists", Code.Unauthenticated);
        return mintAccess(row);
      });
      return { tokens: pairOf(access, next) };
    },

    async logout(req, ctx) {
      await refresh.revokeFamily(req.refreshToken, caller(ctx).userId);
      return {};
    },

    async getMe(_req, ctx) {
      const user = await findUserById(db.sql, caller(ctx).userId);
      if (user === undefined) throw new ConnectError("the signed-in user no longer exists", Code.NotFound);
      return { user: toUser(user) };
    },

    async updateMe(req, ctx) {
      const me = caller(ctx);
      const paths = req.updateMask?.paths ?? [];
      if (paths.length === 0) throw new ConnectError('update_mask: must name "display_name" and/or "email"', Code.InvalidArgument);
      for (const p of paths) {
        if (!updatable.has(p)) {
          const shown = /^[a-z_.]{1,40}$/.test(p) ? `"${p}"` : "a path";
          throw new ConnectError(`update_mask: ${shown} cannot be updated; only "display_name" and "email" can`, Code.InvalidArgument);
        }
      }
      const change: { email?: string; displayName?: string } = {};
      if (paths.includes("email")) {
        if (req.user!.email === "") throw new ConnectError("user.email: must be an email address", Code.InvalidArgument);
        change.email = req.user!.email;
      }
      if (paths.includes("display_name")) change.displayName = req.user!.displayName;
      const user = await updateProfile(db.sql, me.userId, change);
      if (user === undefined) throw new ConnectError("the signed-in user no longer exists", Code.NotFound);
      return { user: toUser(user) };
    },
  });
}
