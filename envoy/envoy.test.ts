/**
 * The generated envoy.yaml: up to date with the contracts and the service
 * list, valid for Envoy, and routing, authenticating and retrying each RPC as
 * its proto says.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { checkEnvoyYaml } from "./check.js";
import { readEdgeConfig } from "./edge-config.js";
import { generateEdgeFiles } from "./files.js";
import { readTopology } from "./topology.js";
import { serviceModules } from "../app/catalogue.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const text = readFileSync(join(root, "envoy", "envoy.yaml"), "utf8");
const envoy = parse(text);
const hcm = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
const routes: any[] = hcm.route_config.virtual_hosts[0].routes;
const clusters: any[] = envoy.static_resources.clusters;
const filter = (name: string) => hcm.http_filters.find((f: any) => f.name === name).typed_config;
const routeFor = (path: string) => routes.find((r) => r.match.path === path || (r.match.prefix !== undefined && path.startsWith(r.match.prefix)) || (r.match.safe_regex && new RegExp(r.match.safe_regex.regex).test(path)));

test("envoy.yaml, docker-compose.yml and deploy/kubernetes are what `npm run envoy` generates now", async () => {
  const files = await generateEdgeFiles(root, process.env);
  for (const [path, expected] of Object.entries(files)) {
    assert.equal(readFileSync(join(root, path), "utf8"), expected, `${path} is stale: run \`npm run envoy\``);
  }
});

test("envoy.yaml passes Envoy's v3 schema and every routing rule", async () => {
  const config = readEdgeConfig(process.env);
  const problems = checkEnvoyYaml(text, { topology: await readTopology(root), issuer: config.issuer, audience: config.audience, allowedOrigins: config.allowedOrigins });
  assert.deepEqual(problems, []);
});

test("the service list is the modules' declarations, in catalogue order", async () => {
  const topology = await readTopology(root);
  const served = new Map(topology.modules.map((m) => [m.name, m.services.map((s) => s.typeName)]));
  assert.deepEqual(served.get("auth"), ["switchyard.auth.v1.AuthService"]);
  assert.deepEqual(served.get("gateway"), ["switchyard.device.v1.DeviceService", "switchyard.notify.v1.NotificationService"]);
  assert.deepEqual(served.get("web"), []);
  assert.deepEqual([...served.keys()], serviceModules.map((m) => m.name));
  const gateway = topology.modules.find((m) => m.name === "gateway")!;
  assert.deepEqual(gateway.httpRoutes, [{ match: "exact", path: "/ws/device", methods: ["GET"], public: true, websocket: true }]);
});

test("each RPC is routed to its module over HTTP/2, with JWT required unless public", () => {
  const register = routeFor("/switchyard.auth.v1.AuthService/Register");
  assert.equal(register.route.cluster, "auth");
  assert.equal(routeFor("/switchyard.device.v1.DeviceService/CallTool").route.cluster, "gateway");
  assert.equal(routeFor("/switchyard.chat.v1.ChatService/Chat").route.timeout, "0s", "a stream has no route timeout");
  const auth = clusters.find((c) => c.name === "auth");
  assert.ok(auth.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config.http2_protocol_options);
  assert.equal(auth.health_checks[0].grpc_health_check.service_name, "switchyard.auth.v1.AuthService");
  assert.ok(auth.circuit_breakers.thresholds[0].max_requests > 0);
  assert.ok(auth.outlier_detection.consecutive_5xx > 0);

  const rules: any[] = filter("envoy.filters.http.jwt_authn").rules;
  const rule = (path: string) => rules.find((r) => r.match.path === path);
  assert.equal(rule("/switchyard.auth.v1.AuthService/Login").requires, undefined, "Login is public");
  assert.equal(rule("/switchyard.auth.v1.AuthService/Refresh").requires, undefined, "Refresh is public");
  assert.deepEqual(rule("/switchyard.auth.v1.AuthService/GetMe").requires, { provider_name: "switchyard" });
  const provider = filter("envoy.filters.http.jwt_authn").providers.switchyard;
  assert.equal(provider.remote_jwks.http_uri.cluster, "auth_http");
  assert.match(provider.remote_jwks.http_uri.uri, /\/\.well-known\/jwks\.json$/);
});

test("an internal RPC never reaches a service through the edge", () => {
  const publish = routeFor("/switchyard.notify.v1.NotificationService/Publish");
  assert.equal(publish.route, undefined);
  assert.equal(publish.direct_response.status, 403); // a local reply to gRPC: PERMISSION_DENIED
  const unknown = routeFor("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
  assert.equal(unknown.direct_response.status, 404, "health and reflection stay inside");
});

test("only idempotent RPCs are retried, and only on UNAVAILABLE", () => {
  assert.equal(routeFor("/switchyard.auth.v1.AuthService/GetMe").route.retry_policy.retry_on, "unavailable");
  assert.equal(routeFor("/switchyard.storage.v1.RecordService/UpdateRecord").route.retry_policy.retry_on, "unavailable");
  assert.equal(routeFor("/switchyard.auth.v1.AuthService/Register").route.retry_policy, undefined);
  assert.equal(routeFor("/switchyard.device.v1.DeviceService/CallTool").route.retry_policy, undefined);
});

test("the HTTP routes: JWKS, the device WebSocket and the console", () => {
  assert.equal(routeFor("/.well-known/jwks.json").route.cluster, "auth_http");
  const ws = routeFor("/ws/device");
  assert.equal(ws.route.cluster, "gateway_http");
  assert.deepEqual(ws.route.upgrade_configs, [{ upgrade_type: "websocket", enabled: true }]);
  assert.deepEqual(hcm.upgrade_configs, [{ upgrade_type: "websocket", enabled: false }], "no upgrades elsewhere");
  assert.equal(routeFor("/index.html").route.cluster, "web_http");
  assert.equal(routes.at(-1).match.prefix, "/", "the console is the last resort");
});

test("CORS allows the configured origins only and exposes gRPC's status headers", () => {
  const cors = hcm.route_config.virtual_hosts[0].typed_per_filter_config["envoy.filters.http.cors"];
  assert.deepEqual(
    cors.allow_origin_string_match,
    readEdgeConfig(process.env).allowedOrigins.map((o) => ({ exact: o })),
  );
  for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) assert.ok(cors.expose_headers.split(",").includes(h), h);
  assert.equal(cors.allow_credentials, false);
  assert.match(cors.allow_headers, /(^|,)authorization(,|$)/);
  assert.match(cors.allow_headers, /(^|,)x-grpc-web(,|$)/);
});
