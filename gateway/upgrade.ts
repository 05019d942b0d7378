/**
 * The `/ws/device` upgrade: everything is checked before the WebSocket
 * exists (Origin allowlist, subprotocol, credential, per-user cap), so a
 * refused client gets a plain HTTP status and costs no socket state. The
 * credential is an access token in the Authorization header or a ticket in
 * `?ticket=`; neither is ever logged.
 */
import { ConnectError } from "@connectrpc/connect";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import { type Logger, parseBearer, type Principal, type RouteDeclaration, type UpgradeRoute } from "../platform/index.js";
import { isService, type VerifyAccessToken } from "./auth.js";
import { chooseProtocol } from "./codec.js";
import type { DeviceHub } from "./hub.js";
import type { Tickets } from "./tickets.js";

/** What the upgrade route needs. */
/**
 * The device WebSocket as the module declares it: public at the edge, because
 * a device authenticates in the upgrade itself (a bearer token or a ticket).
 */
export const deviceSocketRoute: RouteDeclaration = { path: "/ws/device", methods: ["GET"], access: "public", websocket: true };

export interface DeviceUpgradeOptions {
  readonly hub: DeviceHub;
  readonly verify: VerifyAccessToken;
  readonly tickets: Tickets;
  readonly allowedOrigins: readonly string[];
  readonly maxFrameBytes: number;
  readonly maxConnectionsPerUser: number;
  readonly log: Logger;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const reasons: Record<number, string> = { 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests", 503: "Service Unavailable" };

function refuse(socket: Duplex, status: number, message: string): void {
  const body = `${message}\n`;
  const extra = status === 401 ? 'www-authenticate: Bearer realm="switchyard"\r\n' : "";
  socket.end(
    `HTTP/1.1 ${status} ${reasons[status] ?? "Error"}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n${extra}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** The UpgradeRoute serving device WebSockets at /ws/device. */
export function createDeviceUpgrade(o: DeviceUpgradeOptions): UpgradeRoute {
  const allowed = new Set(o.allowedOrigins.map((u) => new URL(u).origin));
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: o.maxFrameBytes,
    perMessageDeflate: false,
    clientTracking: false,
    handleProtocols: (offered) => chooseProtocol(offered) ?? false,
  });

  async function authenticate(req: IncomingMessage): Promise<Principal> {
    const header = req.headers.authorization;
    const token = parseBearer(header);
    if (token === null) throw new Refusal(401, "malformed Authorization header: expected Bearer <access token>");
    const ticket = new URL(req.url ?? "/", "http://device").searchParams.get("ticket") ?? undefined;
    if (token === undefined && ticket === undefined) throw new Refusal(401, "an access token (Authorization: Bearer) or a ticket (?ticket=) is required");
    const check = async <T>(p: Promise<T>) => {
      try {
        return await p;
      } catch (err) {
        const e = ConnectError.from(err);
        throw new Refusal(e.code === 14 ? 503 : 401, e.rawMessage);
      }
    };
    const fromToken = token === undefined ? undefined : await check(o.verify(token));
    const fromTicket = ticket === undefined ? undefined : await check(o.tickets.redeem(ticket));
    if (fromToken && fromTicket && fromToken.userId !== fromTicket.userId) throw new Refusal(401, "the ticket and the access token name different users");
    const p = (fromTicket ?? fromToken)!;
    if (p.expiresAt <= Date.now()) throw new Refusal(401, "the credential expired");
    if (isService(p)) throw new Refusal(403, "device connections are for users, not services");
    return p;
  }

  return {
    path: deviceSocketRoute.path,
    handle(req, socket, head) {
      socket.on("error", () => socket.destroy());
      const origin = req.headers.origin;
      if (origin !== undefined && !allowed.has(origin)) return refuse(socket, 403, "origin not allowed");
      const offered = (req.headers["sec-websocket-protocol"] ?? "").split(",").map((s) => s.trim());
      if (chooseProtocol(offered) === undefined) {
        return refuse(socket, 400, "offer the subprotocol switchyard.device.v1+proto (or switchyard.device.v1+json)");
      }
      authenticate(req).then(
        (principal) => {
          if (o.hub.countUser(principal.userId) >= o.maxConnectionsPerUser) {
            return refuse(socket, 429, `too many device connections for this user (the cap is ${o.maxConnectionsPerUser})`);
          }
          if (socket.destroyed) return;
          wss.handleUpgrade(req, socket, head, (ws) => o.hub.accept(ws, chooseProtocol([ws.protocol])!, principal));
        },
        (err: unknown) => {
          if (err instanceof Refusal) return refuse(socket, err.status, err.message);
          o.log.error({ err: String(err) }, "device upgrade failed");
          refuse(socket, 503, "internal error");
        },
      );
    },
  };
}
