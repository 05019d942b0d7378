/**
 * What a service module is: the one shape `npm start` (and every test that
 * starts services) knows. A module turns a `ServiceContext` into the RPCs,
 * HTTP routes, upgrades, middleware and readiness probes it contributes; it
 * never listens on a port or handles signals itself.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { NatsConnection } from "@nats-io/nats-core";
import type { ProcessAuth } from "./auth/process-auth.js";
import type { EnvVar } from "./config.js";
import type { Database } from "./db/types.js";
import type { Events } from "./events/types.js";
import type { HttpRoute, UpgradeRoute } from "./http-routes.js";
import type { Logger } from "./log.js";
import type { StreamDeclarer } from "./nats/declare.js";
import type { PlatformMetrics } from "./metrics.js";
import type { Middleware, ServiceRegistration } from "./rpc/pipeline.js";
import type { ReadinessProbe } from "./server.js";

/** What the platform hands every service module at start. */
export interface ServiceContext {
  /** This process's id among the instances (used in presence, result subjects). */
  readonly instanceId: string;
  /** The port the process serves on (useful for self-calls in tests). */
  readonly port: number;
  /**
   * Where module `name` (one of this module's `calls`) serves: this process
   * when it runs here, else the `<NAME>_URL` variable (compose and Kubernetes
   * set it from the declarations). A call the module did not declare, or a
   * module elsewhere without its variable, throws a ConfigError naming it.
   */
  serviceUrl(name: string): string;
  readonly log: Logger;
  readonly metrics: PlatformMetrics;
  /** Aborted when the process begins to shut down. */
  readonly shutdownSignal: AbortSignal;
  /** The process's auth wiring: service tokens for internal calls (`auth.serviceTokens(name)`). */
  readonly auth: ProcessAuth;
  /**
   * The process's PostgreSQL pool, migrated before start. Reading it throws
   * unless the module declares `uses: ["db"]` (or "events", or migrations).
   */
  readonly db: Database;
  /**
   * The process's NATS connection (reconnects forever; `requireNats(nc)` from
   * platform/nats/connection.ts answers UNAVAILABLE while it is down).
   * Reading it throws unless the module declares `uses: ["nats"]` (or "events").
   */
  readonly nats: NatsConnection;
  /**
   * Declares the module's JetStream streams and KV buckets (the one way to:
   * NATS_REPLICAS, never lowering replicas, operator settings respected,
   * retries within the start budget, `/readyz` naming what is missing).
   * Reading it throws unless the module declares `uses: ["nats"]`.
   */
  readonly streams: StreamDeclarer;
  /** Outbox publishing and durable consumers. Reading it throws unless the module declares `uses: ["events"]`. */
  readonly events: Events;
}

/** What a started service module contributes to the process. */
export interface ServiceParts {
  readonly services: readonly ServiceRegistration[];
  readonly routes?: readonly HttpRoute[];
  readonly upgrades?: readonly UpgradeRoute[];
  /** Middleware every RPC of the process passes (e.g. the token check). */
  readonly middleware?: readonly Middleware[];
  readonly readiness?: Readonly<Record<string, ReadinessProbe>>;
  /** Stops background work; called after the server stopped serving. */
  stop?(): Promise<void>;
}

/**
 * A plain HTTP route a module owns, declared as data so the edge (Envoy),
 * compose, Kubernetes and the docs are derived from it without starting the
 * module. `path` is exact, or ends in "/*" for everything below it.
 */
export interface RouteDeclaration {
  readonly path: string;
  /** The HTTP methods it answers (HEAD comes with GET). */
  readonly methods: readonly ("GET" | "POST" | "PUT" | "DELETE")[];
  /** "public": the edge lets requests through without a token (the route checks what it needs itself); "user": the edge requires a valid access token. */
  readonly access: "public" | "user";
  /** A WebSocket upgrade rather than a plain request. */
  readonly websocket?: boolean;
}

/** A service module as `SERVICES=` names it: what it serves, declared as data, and how it starts. */
export interface ServiceModule {
  /** The name in `SERVICES=`: lower-case letters and digits (it names a schema, a container and a DNS name too). */
  readonly name: string;
  /** One line for the README's "What runs" table. */
  readonly summary: string;
  /** The protobuf services it serves; starting fails when `start` registers any other, or leaves one out. */
  readonly serves: readonly DescService[];
  /** The plain HTTP routes and upgrades it owns; starting fails when `start` serves any other, or leaves one out. */
  readonly routes?: readonly RouteDeclaration[];
  /** The modules it calls through their generated clients, by name: where each serves comes from `ServiceContext.serviceUrl`. */
  readonly calls?: readonly string[];
  /**
   * The variables only this module reads, declared with config.ts `env`:
   * the README documents them, and the production shapes hand its secrets to
   * its own containers only (compose: `secrets/<name>.env`).
   */
  readonly settings?: Readonly<Record<string, EnvVar<unknown>>>;
  /** How many copies the production shapes (compose, Kubernetes) run; 1 when absent. */
  readonly replicas?: number;
  /** Its migrations folder, holding `NNN_name.sql` (e.g. `new URL("./migrations/", import.meta.url)`); implies "db". */
  readonly migrations?: URL;
  /** Shared infrastructure it reads from ServiceContext; created only when some started module uses it. */
  readonly uses?: readonly ("db" | "nats" | "events")[];
  start(ctx: ServiceContext): ServiceParts | Promise<ServiceParts>;
}
