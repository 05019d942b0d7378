/**
 * Validates envoy.yaml: first against Envoy's own v3 schema (every field
 * name, type, enum and `@type` of every typed_config), then the rules the
 * schema cannot express: every route's cluster exists, every RPC of every
 * service is routed to the module that serves it (internal ones never), the
 * HTTP filter order, the JWT issuer and audience, public RPCs exempt from
 * JWT, retries only for idempotent RPCs and only on UNAVAILABLE, and CORS.
 */
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { parse } from "yaml";
import { grpcCluster, grpcExposedHeaders, httpCluster, httpFilterOrder, jwtProvider } from "./generate.js";
import { createPgvValidator } from "./pgv.js";
import { loadEnvoyRegistry } from "./schema.js";
import { isIdempotent, rpcAccess, rpcPath, type Topology } from "./topology.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** What the semantic checks compare the file with. */
export interface CheckExpectations {
  readonly topology: Topology;
  readonly issuer: string;
  readonly audience: string;
  readonly allowedOrigins: readonly string[];
}

/**
 * Parses `yamlText` with Envoy's Bootstrap schema, then checks the
 * protoc-gen-validate rules Envoy enforces at load. Returns the problem (the
 * parser's message naming the field or type, or each rule broken with its
 * path) or undefined when valid.
 */
export function schemaProblem(yamlText: string): string | undefined {
  const registry = loadEnvoyRegistry();
  const bootstrap = registry.getMessage("envoy.config.bootstrap.v3.Bootstrap");
  if (!bootstrap) return "Envoy's schema has no envoy.config.bootstrap.v3.Bootstrap";
  let json: unknown;
  try {
    json = parse(yamlText);
  } catch (err) {
    return `not YAML: ${(err as Error).message}`;
  }
  let message;
  try {
    message = fromJson(bootstrap, json as JsonValue, { registry });
  } catch (err) {
    return `schema: ${(err as Error).message}`;
  }
  const rules = createPgvValidator(registry).check(bootstrap, message);
  return rules.length > 0 ? `schema rules: ${rules.join("; ")}` : undefined;
}

/** How Envoy matches a route: exact path, prefix, or RE2 regex (JS regex is close enough for ours). */
function matches(match: Json | undefined, path: string): boolean {
  if (!match) return false;
  if (typeof match.path === "string") return match.path === path;
  if (typeof match.prefix === "string") return path.startsWith(match.prefix);
  if (typeof match.safe_regex?.regex === "string") return new RegExp(`^(?:${match.safe_regex.regex})$`).test(path);
  return false;
}

const first = <T extends { match?: Json }>(list: readonly T[], path: string) => list.find((r) => matches(r.match, path));

/** The HTTP connection manager of the first listener, or undefined. */
function connectionManager(config: Json): Json | undefined {
  const filters: Json[] = config.static_resources?.listeners?.[0]?.filter_chains?.[0]?.filters ?? [];
  return filters.find((f) => f.name === "envoy.filters.network.http_connection_manager")?.typed_config;
}

/** The checks the schema cannot make; returns every problem found. */
export function semanticProblems(yamlText: string, expect: CheckExpectations): string[] {
  const problems: string[] = [];
  const config = parse(yamlText) as Json;
  const clusters: Json[] = config.static_resources?.clusters ?? [];
  const clusterNames = new Set(clusters.map((c) => c.name as string));
  const hcm = connectionManager(config);
  if (!hcm) return ["no http_connection_manager on the first listener"];

  // Filter order.
  const filters: Json[] = hcm.http_filters ?? [];
  const types = filters.map((f) => f.typed_config?.["@type"] as string);
  const wanted = httpFilterOrder.map(([, type]) => type);
  if (types.join(" ") !== wanted.join(" ")) {
    problems.push(`http_filters must be cors → grpc_web → jwt_authn → local_ratelimit → router, got ${types.map((t) => t?.split(".").at(-2) ?? "?").join(" → ")}`);
  }

  // Every route's cluster exists.
  const hosts: Json[] = hcm.route_config?.virtual_hosts ?? [];
  const routes: Json[] = hosts.flatMap((h) => h.routes ?? []);
  for (const r of routes) {
    const cluster = r.route?.cluster;
    if (cluster !== undefined && !clusterNames.has(cluster)) problems.push(`route ${r.name ?? JSON.stringify(r.match)} goes to cluster "${cluster}", which does not exist`);
  }

  const jwtRules: Json[] = filters.find((f) => f.name === "envoy.filters.http.jwt_authn")?.typed_config?.rules ?? [];

  // Every RPC routed to its module; internal ones never reach a cluster.
  for (const m of expect.topology.modules) {
    for (const s of m.services) {
      for (const method of s.methods) {
        const path = rpcPath(method);
        const route = first(routes, path);
        const access = rpcAccess(method);
        if (access === "internal") {
          if (route?.route) problems.push(`${path} is ACCESS_INTERNAL but the edge routes it to "${route.route.cluster}"`);
          continue;
        }
        if (!route?.route) {
          problems.push(`${path} is not routed (${route ? "answered by Envoy" : "no route matches"})`);
          continue;
        }
        if (route.route.cluster !== grpcCluster(m.name)) problems.push(`${path} goes to "${route.route.cluster}", but module ${m.name} serves it`);
        const retry = route.route.retry_policy;
        if (isIdempotent(method)) {
          if (retry?.retry_on !== "unavailable") problems.push(`${path} is idempotent: it must retry on "unavailable" only, got ${JSON.stringify(retry?.retry_on)}`);
        } else if (retry) problems.push(`${path} is not idempotent and must not be retried`);
      }
    }
    for (const r of m.httpRoutes) {
      const route = first(routes, r.path);
      if (route?.route?.cluster !== httpCluster(m.name)) problems.push(`${r.path} must go to cluster "${httpCluster(m.name)}"`);
      const ws = (route?.route?.upgrade_configs ?? []).some((u: Json) => u.upgrade_type === "websocket" && u.enabled !== false);
      if (r.websocket && !ws) problems.push(`${r.path} must be upgraded to a WebSocket`);
      const rule = first(jwtRules, r.path);
      if (!r.public && !r.websocket && rule?.requires?.provider_name !== jwtProvider) problems.push(`${r.path} is declared for users only, but jwt_authn does not require a token`);
    }
    if (m.services.length > 0) {
      const c = clusters.find((x) => x.name === grpcCluster(m.name));
      const http2 = c?.typed_extension_protocol_options?.["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]?.explicit_http_config?.http2_protocol_options;
      if (!c) problems.push(`no cluster "${grpcCluster(m.name)}" for module ${m.name}`);
      else {
        if (!http2) problems.push(`cluster "${c.name}" must speak HTTP/2`);
        const hc = c.health_checks?.[0]?.grpc_health_check?.service_name;
        if (!m.services.some((s) => s.typeName === hc)) problems.push(`cluster "${c.name}" must health-check one of its services over grpc.health.v1, got ${JSON.stringify(hc)}`);
        if (!c.circuit_breakers || !c.outlier_detection) problems.push(`cluster "${c.name}" needs circuit_breakers and outlier_detection`);
      }
    }
  }

  // JWT: issuer and audience as auth signs them; public RPCs exempt, the others required.
  const jwt = filters.find((f) => f.name === "envoy.filters.http.jwt_authn")?.typed_config ?? {};
  const provider = jwt.providers?.[jwtProvider];
  if (!provider) problems.push(`jwt_authn has no provider "${jwtProvider}"`);
  else {
    if (provider.issuer !== expect.issuer) problems.push(`jwt_authn issuer is ${JSON.stringify(provider.issuer)}, but auth signs with ${JSON.stringify(expect.issuer)} (AUTH_ISSUER)`);
    if (JSON.stringify(provider.audiences) !== JSON.stringify([expect.audience])) {
      problems.push(`jwt_authn audiences are ${JSON.stringify(provider.audiences)}, but auth signs for ${JSON.stringify(expect.audience)} (AUTH_AUDIENCE)`);
    }
    const jwksCluster = provider.remote_jwks?.http_uri?.cluster;
    if (!clusterNames.has(jwksCluster)) problems.push(`jwt_authn fetches JWKS through cluster "${jwksCluster}", which does not exist`);
  }
  const rules: Json[] = jwt.rules ?? [];
  for (const m of expect.topology.modules) {
    for (const s of m.services) {
      for (const method of s.methods) {
        const access = rpcAccess(method);
        if (access === "internal") continue;
        const rule = first(rules, rpcPath(method));
        if (access === "public" && rule?.requires) problems.push(`${rpcPath(method)} is public but jwt_authn requires a token`);
        if (access === "user" && rule?.requires?.provider_name !== jwtProvider) problems.push(`${rpcPath(method)} needs a token but jwt_authn does not require one`);
      }
    }
  }

  // CORS: the configured origins only, gRPC's headers exposed, never credentials with a wildcard.
  const cors = hosts[0]?.typed_per_filter_config?.["envoy.filters.http.cors"] ?? {};
  const origins: Json[] = cors.allow_origin_string_match ?? [];
  const wildcard = origins.some((o) => o.safe_regex !== undefined || o.prefix === "");
  const wantWildcard = expect.allowedOrigins.includes("*");
  const exact = origins.map((o) => o.exact).filter((o) => o !== undefined);
  if (wantWildcard !== wildcard || (!wantWildcard && JSON.stringify(exact) !== JSON.stringify(expect.allowedOrigins))) {
    problems.push(`CORS origins are ${JSON.stringify(origins)}, but ALLOWED_ORIGINS is ${JSON.stringify(expect.allowedOrigins)}`);
  }
  const exposed = String(cors.expose_headers ?? "").split(",").map((h) => h.trim().toLowerCase());
  for (const h of grpcExposedHeaders) if (!exposed.includes(h)) problems.push(`CORS must expose ${h}`);
  if (wildcard && cors.allow_credentials === true) problems.push("CORS must not allow credentials with a wildcard origin");
  return problems;
}

/** Schema first (a file Envoy would refuse is not checked further), then the semantic rules. */
export function checkEnvoyYaml(yamlText: string, expect: CheckExpectations): string[] {
  const schema = schemaProblem(yamlText);
  return schema ? [schema] : semanticProblems(yamlText, expect);
}
