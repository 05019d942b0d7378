/**
 * Builds envoy.yaml from the contracts and the service list: one gRPC
 * (HTTP/2) cluster per module that serves RPCs, one HTTP/1.1 cluster per
 * module that serves plain HTTP routes (JWKS, webhook, WebSocket, console),
 * a route per RPC, and the filter chain cors → grpc_web → jwt_authn →
 * local_ratelimit → router. Internal RPCs are answered by Envoy itself with
 * PERMISSION_DENIED and never reach a service.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { stringify } from "yaml";
import type { EdgeConfig } from "./edge-config.js";
import { isIdempotent, rpcAccess, rpcPath, type ModuleTopology, type Topology } from "./topology.js";

type Json = Record<string, unknown>;

/** Name of the JWT provider in jwt_authn. */
export const jwtProvider = "switchyard";
/** The HTTP filters, in the one order the edge uses (names and their config types). */
export const httpFilterOrder = [
  ["envoy.filters.http.cors", "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"],
  ["envoy.filters.http.grpc_web", "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"],
  ["envoy.filters.http.jwt_authn", "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"],
  ["envoy.filters.http.local_ratelimit", "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"],
  ["envoy.filters.http.router", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"],
] as const;
/** Response headers browsers must be able to read for gRPC-Web errors. */
export const grpcExposedHeaders = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
/** Longest unary RPC the edge waits for (CallTool may take 300 s), in seconds. */
const unaryTimeoutSeconds = 330;
/** Paths shaped like "/pkg.Service/Method": RPCs nobody serves get UNIMPLEMENTED from Envoy. */
const rpcShapedPath = "^/[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)+/[^/]+$";

/** The gRPC (HTTP/2) cluster of a module. */
export const grpcCluster = (module: string) => module;
/** The HTTP/1.1 cluster of a module (plain routes and WebSocket upgrades). */
export const httpCluster = (module: string) => `${module}_http`;

const typed = (type: string, body: Json = {}): Json => ({ "@type": `type.googleapis.com/${type}`, ...body });

function endpoint(module: ModuleTopology, port: number): Json {
  // One DNS name per module: compose resolves it to every replica.
  return {
    cluster_name: module.name,
    endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: module.name, port_value: port } } } }] }],
  };
}

function resilience(): Json {
  return {
    circuit_breakers: {
      thresholds: [{ priority: "DEFAULT", max_connections: 1024, max_pending_requests: 1024, max_requests: 4096, max_retries: 32 }],
    },
    outlier_detection: {
      consecutive_5xx: 5,
      consecutive_gateway_failure: 3,
      enforcing_consecutive_gateway_failure: 100,
      interval: "10s",
      base_ejection_time: "30s",
      max_ejection_percent: 50,
    },
  };
}

function clusters(topology: Topology, config: EdgeConfig): Json[] {
  const out: Json[] = [];
  for (const m of topology.modules) {
    const common = { type: "STRICT_DNS", dns_lookup_family: "V4_ONLY", lb_policy: "ROUND_ROBIN", connect_timeout: "2s" };
    if (m.services.length > 0) {
      out.push({
        name: grpcCluster(m.name),
        ...common,
        typed_extension_protocol_options: {
          "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {
            explicit_http_config: { http2_protocol_options: { connection_keepalive: { interval: "30s", timeout: "5s" } } },
          }),
        },
        load_assignment: endpoint(m, config.servicePort),
        // Envoy runs one active health checker per cluster; every service of a
        // process changes health together, so the first one stands for all.
        health_checks: [
          { timeout: "2s", interval: "5s", unhealthy_threshold: 2, healthy_threshold: 1, grpc_health_check: { service_name: m.services[0]!.typeName } },
        ],
        ...resilience(),
      });
    }
    if (m.httpRoutes.length > 0) {
      out.push({
        name: httpCluster(m.name),
        ...common,
        typed_extension_protocol_options: {
          "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {
            explicit_http_config: { http_protocol_options: {} },
          }),
        },
        load_assignment: endpoint(m, config.servicePort),
        health_checks: [{ timeout: "2s", interval: "5s", unhealthy_threshold: 2, healthy_threshold: 1, http_health_check: { path: "/readyz" } }],
        ...resilience(),
      });
    }
  }
  return out;
}

function rpcRoute(module: ModuleTopology, method: DescMethod): Json {
  const path = rpcPath(method);
  if (rpcAccess(method) === "internal") {
    // A local reply to a gRPC request carries grpc-status 7 (PERMISSION_DENIED).
    return {
      name: `${method.parent.typeName}.${method.name}`,
      match: { path },
      direct_response: { status: 403, body: { inline_string: `${method.parent.name}/${method.name} is internal: only services may call it, never through the edge` } },
    };
  }
  const streaming = method.methodKind !== "unary";
  const action: Json = {
    cluster: grpcCluster(module.name),
    timeout: streaming ? "0s" : `${unaryTimeoutSeconds}s`,
    // Let the caller's grpc-timeout bound the call (0s: no cap beyond it for streams).
    max_stream_duration: { grpc_timeout_header_max: streaming ? "0s" : `${unaryTimeoutSeconds}s` },
  };
  if (isIdempotent(method)) {
    action.retry_policy = {
      retry_on: "unavailable",
      num_retries: 2,
      retry_back_off: { base_interval: "0.1s", max_interval: "1s" },
      retry_host_predicate: [
        { name: "envoy.retry_host_predicates.previous_hosts", typed_config: typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate") },
      ],
      host_selection_retry_max_attempts: "3",
    };
  }
  return { name: `${method.parent.typeName}.${method.name}`, match: { path }, route: action };
}

function routes(topology: Topology): Json[] {
  const out: Json[] = [];
  const catchAll: Json[] = [];
  for (const m of topology.modules) {
    for (const r of m.httpRoutes) {
      const match = r.match === "exact" ? { path: r.path } : { prefix: r.path };
      const route: Json = { cluster: httpCluster(m.name) };
      if (r.websocket) Object.assign(route, { timeout: "0s", idle_timeout: "3600s", upgrade_configs: [{ upgrade_type: "websocket", enabled: true }] });
      (r.match === "prefix" && r.path === "/" ? catchAll : out).push({ name: `${m.name}:${r.path}`, match, route });
    }
  }
  for (const m of topology.modules) for (const s of m.services) for (const method of s.methods) out.push(rpcRoute(m, method));
  out.push({
    name: "unknown-rpc",
    match: { safe_regex: { regex: rpcShapedPath } },
    direct_response: { status: 404, body: { inline_string: "no such RPC at the edge" } },
  });
  return [...out, ...catchAll];
}

function jwtRules(topology: Topology): Json[] {
  const rules: Json[] = [];
  for (const m of topology.modules) {
    for (const s of m.services) {
      for (const method of s.methods) {
        const access = rpcAccess(method);
        if (access === "internal") continue; // answered by Envoy, never routed
        rules.push(access === "public" ? { match: { path: rpcPath(method) } } : { match: { path: rpcPath(method) }, requires: { provider_name: jwtProvider } });
      }
    }
    for (const r of m.httpRoutes) {
      // Devices may authenticate with a bearer token or a ticket in the query;
      // a token that is present must be valid.
      const match = r.match === "exact" ? { path: r.path } : { prefix: r.path };
      if (r.websocket) {
        rules.push({
          match,
          requires: { requires_any: { requirements: [{ provider_name: jwtProvider }, { allow_missing: {} }] } },
        });
      } else if (!r.public) {
        rules.push({ match, requires: { provider_name: jwtProvider } });
      }
    }
  }
  return rules;
}

function httpFilters(topology: Topology, config: EdgeConfig): Json[] {
  const auth = topology.modules.find((m) => m.name === "auth");
  const configs: Record<string, Json> = {
    "envoy.filters.http.jwt_authn": {
      providers: {
        [jwtProvider]: {
          issuer: config.issuer,
          audiences: [config.audience],
          remote_jwks: {
            http_uri: { uri: `http://auth:${config.servicePort}/.well-known/jwks.json`, cluster: httpCluster(auth?.name ?? "auth"), timeout: "2s" },
            cache_duration: "300s",
            async_fetch: {},
            retry_policy: { num_retries: 3, retry_back_off: { base_interval: "0.5s", max_interval: "5s" } },
          },
          // Services check the token again; Envoy's check keeps bad tokens off the network.
          forward: true,
        },
      },
      rules: jwtRules(topology),
    },
    "envoy.filters.http.local_ratelimit": {
      stat_prefix: "edge_rate_limit",
      token_bucket: { max_tokens: config.rateLimitPerSecond * 2, tokens_per_fill: config.rateLimitPerSecond, fill_interval: "1s" },
      filter_enabled: { runtime_key: "edge_rate_limit_enabled", default_value: { numerator: 100, denominator: "HUNDRED" } },
      filter_enforced: { runtime_key: "edge_rate_limit_enforced", default_value: { numerator: 100, denominator: "HUNDRED" } },
      rate_limited_as_resource_exhausted: true,
    },
  };
  return httpFilterOrder.map(([name, type]) => ({ name, typed_config: { "@type": type, ...(configs[name] ?? {}) } }));
}

function corsPolicy(config: EdgeConfig, allowedHeaders: readonly string[], allowedMethods: readonly string[], exposedHeaders: readonly string[]): Json {
  const origins = config.allowedOrigins.includes("*") ? [{ safe_regex: { regex: ".*" } }] : config.allowedOrigins.map((o) => ({ exact: o }));
  return typed("envoy.config.route.v3.CorsPolicy", {
    allow_origin_string_match: origins,
    allow_methods: allowedMethods.join(","),
    allow_headers: allowedHeaders.join(",").toLowerCase(),
    expose_headers: [...new Set([...grpcExposedHeaders, ...exposedHeaders.map((h) => h.toLowerCase())])].join(","),
    max_age: "7200",
    allow_credentials: false,
  });
}

/** Header lists the CORS policy uses (the platform's, so the two edges agree). */
export interface CorsLists {
  readonly allowedHeaders: readonly string[];
  readonly allowedMethods: readonly string[];
  readonly exposedHeaders: readonly string[];
}

/** The Envoy bootstrap for `topology` as a plain object (the YAML's content). */
export function buildEnvoyConfig(topology: Topology, config: EdgeConfig, cors: CorsLists): Json {
  const hcm = typed("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", {
    stat_prefix: "edge",
    codec_type: "AUTO",
    use_remote_address: true,
    normalize_path: true,
    merge_slashes: true,
    path_with_escaped_slashes_action: "REJECT_REQUEST",
    request_headers_timeout: "10s",
    // WebSockets only where a route enables them (/ws/device).
    upgrade_configs: [{ upgrade_type: "websocket", enabled: false }],
    access_log: [{ name: "envoy.access_loggers.stdout", typed_config: typed("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog") }],
    http_filters: httpFilters(topology, config),
    route_config: {
      name: "edge",
      virtual_hosts: [
        {
          name: "switchyard",
          domains: ["*"],
          typed_per_filter_config: { "envoy.filters.http.cors": corsPolicy(config, cors.allowedHeaders, cors.allowedMethods, cors.exposedHeaders) },
          routes: routes(topology),
        },
      ],
    },
  });
  const filterChain: Json = { filters: [{ name: "envoy.filters.network.http_connection_manager", typed_config: hcm }] };
  if (config.tls) {
    filterChain.transport_socket = {
      name: "envoy.transport_sockets.tls",
      typed_config: typed("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", {
        common_tls_context: {
          alpn_protocols: ["h2", "http/1.1"],
          tls_certificates: [{ certificate_chain: { filename: config.tls.certFile }, private_key: { filename: config.tls.keyFile } }],
        },
      }),
    };
  }
  return {
    admin: { address: { socket_address: { address: "127.0.0.1", port_value: 9901 } } },
    static_resources: {
      listeners: [{ name: "edge", address: { socket_address: { address: "0.0.0.0", port_value: config.edgePort } }, filter_chains: [filterChain] }],
      clusters: clusters(topology, config),
    },
  };
}

/** The header every generated file starts with. */
export const generatedHeader = (what: string) =>
  `# GENERATED by \`npm run envoy\` from ${what}. Do not edit: change the protos or\n# the module declarations (app/catalogue.ts) and run \`npm run envoy\` again (a test fails when this file is stale).\n`;

/** Renders `config` as envoy.yaml text (deterministic). */
export function renderEnvoyYaml(config: Json): string {
  return generatedHeader("the contracts (gen/) and the module declarations") + stringify(config, { lineWidth: 0, aliasDuplicateObjects: false });
}
