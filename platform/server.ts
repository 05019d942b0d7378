/**
 * One port for everything a service exposes.
 *
 * A TCP listener looks at each connection's first bytes: the HTTP/2 preface
 * (`PRI * HTTP/2.0`) goes to the gRPC path (node:http2, h2c), anything else to an
 * HTTP/1.1 server that routes RPC paths to connect-node (gRPC-Web, Connect)
 * and the rest to plain HTTP routes and WebSocket upgrades. Browsers never
 * speak cleartext HTTP/2, so nothing a browser needs is lost by the split.
 *
 * Both RPC paths invoke the same composed methods (see rpc/pipeline.ts), so
 * telemetry, deadlines, shutdown, auth, limits and validation behave the same
 * whichever protocol a call arrives on.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { DescMethod } from "@bufbuild/protobuf";
import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection as ReflectionV1 } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { createHealthState, ServingStatus, type HealthState } from "./builtin/health.js";
import { createReflection } from "./builtin/reflection.js";
import type { CorsLayer } from "./cors.js";
import { createRouteTable, sendJson, type HttpRoute, type UpgradeRoute } from "./http-routes.js";
import type { Logger } from "./log.js";
import type { PlatformMetrics } from "./metrics.js";
import { lifecycle } from "./middleware/lifecycle.js";
import { telemetry } from "./middleware/telemetry.js";
import { validate } from "./middleware/validate.js";
import { createConnectPath } from "./rpc/connect-path.js";
import { createGrpcPath, type GrpcPath } from "./rpc/grpc-path.js";
import { createPlatformMethods, type Middleware, type PlatformMethod, type ServiceRegistration } from "./rpc/pipeline.js";

/** A dependency `/readyz` asks about; resolves true when it is usable. */
export type ReadinessProbe = () => boolean | Promise<boolean>;

/** What a platform server is built from. */
export interface PlatformServerOptions {
  readonly services: readonly ServiceRegistration[];
  /** Middleware between the platform's own (telemetry, lifecycle) and validation: auth, limits. */
  readonly middleware?: readonly Middleware[];
  readonly routes?: readonly HttpRoute[];
  readonly upgrades?: readonly UpgradeRoute[];
  /** Named dependency checks for `/readyz` (database, NATS, ...). */
  readonly readiness?: Readonly<Record<string, ReadinessProbe>>;
  /** CORS for browsers calling directly (see cors.ts); runs before anything else on HTTP/1.1. */
  readonly cors?: CorsLayer;
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
  readonly log: Logger;
  readonly metrics: PlatformMetrics;
}

/** A running (or ready to run) platform server. */
export interface PlatformServer {
  /** Starts listening; resolves with the bound port. */
  listen(port: number, host?: string): Promise<number>;
  /** The grpc.health.v1 state of the served services. */
  readonly health: HealthState;
  /** Aborted when shutdown begins. */
  readonly shutdownSignal: AbortSignal;
  /**
   * Shuts down gracefully: health NOT_SERVING, new calls refused, open
   * streams ended with UNAVAILABLE, unary calls in flight given up to
   * `graceMs` to finish, then every connection closed.
   */
  shutdown(graceMs: number): Promise<void>;
}

const preface = Buffer.from("PRI * HTTP/2.0");

/**
 * Largest HTTP/1.1 request header block. Node's default (16 KiB) would answer
 * an oversized credential with a bare 431; at 64 KiB, as HTTP/2 allows by
 * default, it reaches the token check and gets a clear UNAUTHENTICATED on
 * every protocol path. Envoy's own limit (60 KiB) is lower at the edge.
 */
export const MAX_HEADER_BYTES = 64 * 1024;

/** Builds the server: composes every method once, then serves them on one port. */
export function createPlatformServer(options: PlatformServerOptions): PlatformServer {
  const { log, metrics } = options;
  const shutdownController = new AbortController();
  const shutdownSignal = shutdownController.signal;
  const life = lifecycle(shutdownSignal);
  const { registrations, health } = withBuiltinServices(options.services);
  const methods = createPlatformMethods(
    registrations,
    [telemetry(log, metrics), life.middleware, ...(options.middleware ?? []), validate()],
    unimplemented,
  );
  const onInternalError = (err: unknown, m: PlatformMethod) =>
    log.error({ rpc: m.path, err: err instanceof Error ? err.stack : String(err) }, "internal error");
  const limits = { readMaxBytes: options.readMaxBytes, writeMaxBytes: options.writeMaxBytes, onInternalError };
  const grpcPath = createGrpcPath(methods, limits);
  const connectPath = createConnectPath(methods, { ...limits, shutdownSignal });
  const routes = [...builtinRoutes(options.readiness ?? {}, metrics, shutdownSignal), ...(options.routes ?? [])];
  const http1 = createHttp1Server({ routes, upgrades: options.upgrades ?? [], cors: options.cors, connectPath, shutdownSignal, log });
  const sockets = new Set<net.Socket>();
  const listener = createProtocolSplitter(grpcPath, http1, sockets);

  return {
    health,
    shutdownSignal,
    listen(port, host = "0.0.0.0") {
      return new Promise((resolve, reject) => {
        listener.once("error", reject);
        listener.listen(port, host, () => {
          listener.off("error", reject);
          health.setAll(ServingStatus.SERVING);
          resolve((listener.address() as net.AddressInfo).port);
        });
      });
    },
    async shutdown(graceMs) {
      if (shutdownSignal.aborted) return;
      health.setAll(ServingStatus.NOT_SERVING);
      shutdownController.abort(new ConnectError("the server is shutting down; retry on another instance", Code.Unavailable));
      listener.close();
      grpcPath.drain(graceMs);
      http1.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
      await Promise.race([life.inFlight.idle(), deadline]);
      clearTimeout(timer);
      // Let the last responses and stream endings reach their sockets.
      await new Promise((resolve) => setTimeout(resolve, 50));
      grpcPath.destroy();
      http1.closeAllConnections();
      for (const s of sockets) s.destroy();
    },
  };
}

/** The served services plus the platform's own: grpc health and server reflection (v1 and v1alpha). */
function withBuiltinServices(services: readonly ServiceRegistration[]): { registrations: ServiceRegistration[]; health: HealthState } {
  const appServices = services.map((r) => r.service);
  const reflectionImpl = createReflection([...appServices, Health, ReflectionV1, ReflectionV1alpha]);
  const health = createHealthState(appServices.map((s) => s.typeName));
  const registrations: ServiceRegistration[] = [
    ...services,
    { service: Health, impl: health.impl },
    { service: ReflectionV1, impl: { serverReflectionInfo: reflectionImpl } },
    { service: ReflectionV1alpha, impl: { serverReflectionInfo: reflectionImpl } },
  ];
  return { registrations, health };
}

/** What `/readyz` answers: every probe's result (a probe that throws counts as false), and whether all hold. */
export async function checkReadiness(
  probes: Readonly<Record<string, ReadinessProbe>>,
  shuttingDown: boolean,
): Promise<{ ready: boolean; shuttingDown: boolean; checks: Record<string, boolean> }> {
  const checks: Record<string, boolean> = {};
  await Promise.all(
    Object.entries(probes).map(async ([name, probe]) => {
      checks[name] = await Promise.resolve()
        .then(probe)
        .catch(() => false);
    }),
  );
  return { ready: !shuttingDown && Object.values(checks).every(Boolean), shuttingDown, checks };
}

/** `/healthz` (alive), `/readyz` (the probes; 503 unless all hold) and `/metrics` (Prometheus). */
function builtinRoutes(probes: Readonly<Record<string, ReadinessProbe>>, metrics: PlatformMetrics, shutdownSignal: AbortSignal): HttpRoute[] {
  return [
    { method: "GET", path: "/healthz", handle: (_req, res) => sendJson(res, 200, { status: "alive" }) },
    {
      method: "GET",
      path: "/readyz",
      async handle(_req, res) {
        const body = await checkReadiness(probes, shutdownSignal.aborted);
        sendJson(res, body.ready ? 200 : 503, body, { "cache-control": "no-store" });
      },
    },
    {
      method: "GET",
      path: "/metrics",
      async handle(_req, res) {
        const body = await metrics.registry.metrics();
        res.writeHead(200, { "content-type": metrics.registry.contentType });
        res.end(body);
      },
    },
  ];
}

/** The HTTP/1.1 side: CORS, then RPCs (gRPC-Web, Connect), then plain routes; WebSocket upgrades; malformed requests get a 400. */
function createHttp1Server(o: {
  routes: readonly HttpRoute[];
  upgrades: readonly UpgradeRoute[];
  cors: CorsLayer | undefined;
  connectPath: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
  shutdownSignal: AbortSignal;
  log: Logger;
}): http.Server {
  const { shutdownSignal, log } = o;
  const findRoute = createRouteTable([...o.routes]);
  const upgrades = new Map(o.upgrades.map((u) => [u.path, u]));
  const http1 = http.createServer({ requestTimeout: 0, keepAliveTimeout: 65_000, maxHeaderSize: MAX_HEADER_BYTES }, (req, res) => {
    if (shutdownSignal.aborted) res.setHeader("connection", "close");
    if (o.cors?.(req, res)) return;
    if (o.connectPath(req, res)) return;
    // The path without its query: a query can carry a credential (a device ticket), never echoed or logged.
    const path = (req.url ?? "/").split("?", 1)[0]!;
    const route = findRoute(req.method ?? "GET", path);
    if (route === undefined) return sendJson(res, 404, { error: `no route for ${req.method} ${path}` });
    if (route === "method-not-allowed") return sendJson(res, 405, { error: `${req.method} is not allowed on ${path}` });
    Promise.resolve()
      .then(() => route.handle(req, res))
      .catch((err: unknown) => {
        const status = (err as { status?: number }).status ?? 500;
        if (status >= 500) log.error({ path, err: (err as Error).stack }, "http route failed");
        if (!res.headersSent) sendJson(res, status, { error: status >= 500 ? "internal error" : (err as Error).message });
        else res.destroy();
      });
  });
  http1.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Malformed HTTP/1.1 (e.g. both Content-Length and Transfer-Encoding): 400, then close.
    if (socket.writable) socket.end(`HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\nmalformed HTTP request: ${err.code ?? "bad request"}\n`);
    else socket.destroy();
  });
  http1.on("upgrade", (req, socket: Duplex, head: Buffer) => {
    const route = upgrades.get((req.url ?? "").split("?", 1)[0]!);
    if (route === undefined || shutdownSignal.aborted) {
      socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n");
      return;
    }
    route.handle(req, socket, head);
  });
  return http1;
}

/**
 * What the first bytes of a connection say: "h2" (the HTTP/2 preface),
 * "h1" (anything else), or "wait" (a prefix of the preface: more bytes needed).
 */
export function sniffProtocol(seen: Uint8Array): "h2" | "h1" | "wait" {
  const n = Math.min(seen.length, preface.length);
  if (!preface.subarray(0, n).equals(seen.subarray(0, n))) return "h1";
  return seen.length < preface.length ? "wait" : "h2";
}

/** The TCP listener: each connection goes to the gRPC path (h2c) or the HTTP/1.1 server by its first bytes; open sockets are kept in `sockets`. */
function createProtocolSplitter(grpcPath: GrpcPath, http1: http.Server, sockets: Set<net.Socket>): net.Server {
  // noDelay: small gRPC responses must not wait on Nagle's algorithm for the previous ACK.
  return net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    let seen = Buffer.alloc(0);
    const sniff = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const protocol = sniffProtocol(seen);
      if (protocol === "wait") return; // wait for enough bytes to decide
      socket.off("data", sniff);
      socket.pause();
      socket.unshift(seen);
      // http2 takes the unshifted bytes from the socket's buffer itself; the
      // HTTP/1.1 parser needs the socket flowing again.
      if (protocol === "h2") grpcPath.inject(socket);
      else {
        http1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", sniff);
  });
}

function unimplemented(method: DescMethod) {
  return () => {
    throw new ConnectError(`${method.parent.typeName}/${method.name} is not implemented yet`, Code.Unimplemented);
  };
}
