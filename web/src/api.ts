/**
 * The console's connection to Switchyard: gRPC-Web clients of the services it
 * uses, on the origin that served the page (npm start, or Envoy in
 * production), with the signed-in user's access token attached.
 */
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService, type Tokens, type User } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { BillingService } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { DeviceService } from "../../gen/switchyard/device/v1/device_pb.js";
import { AgentService } from "../../gen/switchyard/chat/v1/agent_pb.js";
import { ChatService } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { NotificationService } from "../../gen/switchyard/notify/v1/notify_pb.js";

/** The signed-in user's tokens; secrets, kept in memory only. */
interface Credentials {
  accessToken: string;
  refreshToken: string;
}

/** A console session: clients plus the tokens they send. */
export interface Session {
  readonly auth: Client<typeof AuthService>;
  readonly devices: Client<typeof DeviceService>;
  readonly notifications: Client<typeof NotificationService>;
  readonly billing: Client<typeof BillingService>;
  /** The gRPC-Web transport with the user's token, for a panel's own clients (e.g. plugins.ts). */
  readonly transport: Transport;
  readonly chat: Client<typeof ChatService>;
  readonly agents: Client<typeof AgentService>;
  readonly signedIn: boolean;
  /** Registers and signs in; returns the new user. */
  register(email: string, password: string, displayName: string): Promise<User>;
  /** Signs in; returns the user. */
  login(email: string, password: string): Promise<User>;
  /** Revokes the refresh token (best effort) and forgets both tokens. */
  logout(): Promise<void>;
  /**
   * Runs `call`; when it fails UNAUTHENTICATED and a refresh token is held,
   * refreshes the tokens once and runs it again.
   */
  withRefresh<T>(call: () => Promise<T>): Promise<T>;
}

/** Creates a session talking to `baseUrl` (default: this page's origin). */
export function createSession(baseUrl = location.origin): Session {
  let creds: Credentials | undefined;
  const bearer: Interceptor = (next) => (req) => {
    if (creds) req.header.set("authorization", `Bearer ${creds.accessToken}`);
    return next(req);
  };
  const transport = createGrpcWebTransport({ baseUrl, interceptors: [bearer] });
  const auth = createClient(AuthService, transport);
  const keep = (tokens: Tokens | undefined) => {
    if (!tokens) throw new ConnectError("the server returned no tokens", Code.Internal);
    creds = { accessToken: tokens.accessToken, refreshToken: tokens.refreshToken };
  };
  let refreshing: Promise<void> | undefined;
  const refresh = () =>
    (refreshing ??= (async () => {
      try {
        if (!creds) throw new ConnectError("not signed in", Code.Unauthenticated);
        keep((await auth.refresh({ refreshToken: creds.refreshToken })).tokens);
      } catch (err) {
        creds = undefined;
        throw err;
      } finally {
        refreshing = undefined;
      }
    })());

  return {
    auth,
    devices: createClient(DeviceService, transport),
    notifications: createClient(NotificationService, transport),
    billing: createClient(BillingService, transport),
    transport,
    chat: createClient(ChatService, transport),
    agents: createClient(AgentService, transport),
    get signedIn() {
      return creds !== undefined;
    },
    async register(email, password, displayName) {
      const res = await auth.register({ email, password, displayName });
      keep(res.tokens);
      return res.user!;
    },
    async login(email, password) {
      const res = await auth.login({ email, password });
      keep(res.tokens);
      return res.user!;
    },
    async logout() {
      const held = creds;
      if (held) await auth.logout({ refreshToken: held.refreshToken }).catch(() => undefined);
      creds = undefined;
    },
    async withRefresh(call) {
      try {
        return await call();
      } catch (err) {
        if (ConnectError.from(err).code !== Code.Unauthenticated || !creds) throw err;
        await refresh();
        return call();
      }
    },
  };
}

/** A person-readable line for an error: its gRPC code name and message. */
export function describeError(err: unknown): string {
  const e = ConnectError.from(err);
  return `${Code[e.code] ?? e.code}: ${e.rawMessage}`;
}
