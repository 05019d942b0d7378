/**
 * `npm run envoy:check` refuses what Envoy would refuse (misspelt fields,
 * wrong types, unknown typed_config types) and what would route wrongly.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { checkEnvoyYaml, type CheckExpectations } from "./check.js";
import { readEdgeConfig } from "./edge-config.js";
import { envoySchemaPath } from "./schema.js";
import { readTopology } from "./topology.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const original = readFileSync(join(root, "envoy", "envoy.yaml"), "utf8");
let expect: CheckExpectations;
const tmp = mkdtempSync(join(tmpdir(), "sy-envoy-check-"));

before(async () => {
  const c = readEdgeConfig(process.env);
  expect = { topology: await readTopology(root), issuer: c.issuer, audience: c.audience, allowedOrigins: c.allowedOrigins };
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** envoy.yaml with one change made to its parsed content. */
function mutate(change: (config: any, hcm: any) => void): string {
  const config = parse(original);
  change(config, config.static_resources.listeners[0].filter_chains[0].filters[0].typed_config);
  return stringify(config);
}
const routesOf = (hcm: any): any[] => hcm.route_config.virtual_hosts[0].routes;
const check = (text: string) => checkEnvoyYaml(text, expect);
const one = (problems: string[], pattern: RegExp) => assert.ok(problems.some((p) => pattern.test(p)), `expected a problem matching ${pattern}, got:\n${problems.join("\n")}`);

test("the committed file passes", () => assert.deepEqual(check(original), []));

test("a misspelt field is refused, inside a typed_config too", () => {
  one(check(mutate((_c, hcm) => ((hcm.stat_prefx = hcm.stat_prefix), delete hcm.stat_prefix))), /HttpConnectionManager.*"stat_prefx" is unknown/);
  one(check(mutate((c) => (c.static_resources.clusters[0].conect_timeout = "1s"))), /Cluster.*"conect_timeout" is unknown/);
});

test("a wrong type is refused", () => {
  one(check(mutate((c) => (c.static_resources.listeners[0].address.socket_address.port_value = "eighty"))), /port_value.*expected number/);
  one(check(mutate((c) => (c.static_resources.clusters[0].connect_timeout = "2 seconds"))), /Duration.*"2 seconds"/);
  one(check(mutate((c) => (c.static_resources.clusters[0].lb_policy = "ROUND_ROBINS"))), /LbPolicy.*"ROUND_ROBINS"/);
});

test("an unknown @type is refused", () => {
  const text = mutate((_c, hcm) => (hcm.http_filters[1].typed_config["@type"] = "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWebb"));
  one(check(text), /GrpcWebb is not in the type registry/);
});

test("values Envoy's own validation rules (protoc-gen-validate) refuse are refused, with their path", () => {
  one(check(mutate((c) => (c.static_resources.clusters[0].outlier_detection.max_ejection_percent = 150))), /clusters\[0\]\.outlier_detection\.max_ejection_percent: must be at most 100, got 150/);
  one(check(mutate((c) => (c.static_resources.clusters[0].connect_timeout = "0s"))), /connect_timeout: must be greater than 0s/);
  one(check(mutate((c) => (c.static_resources.clusters[0].name = ""))), /clusters\[0\]\.name: must have at least 1 character/);
  one(check(mutate((_c, hcm) => delete routesOf(hcm)[5].route)), /routes\[5\]\.action: one of route, redirect, direct_response/);
  one(check(mutate((_c, hcm) => (hcm.route_config.virtual_hosts[0].domains = []))), /domains: needs at least 1 item/);
});

test("a route to a missing cluster is refused", () => {
  const text = mutate((_c, hcm) => (routesOf(hcm).find((r) => r.match.path === "/switchyard.auth.v1.AuthService/GetMe").route.cluster = "auth-typo"));
  one(check(text), /GetMe.*cluster "auth-typo", which does not exist/);
});

test("an unrouted RPC is refused", () => {
  const text = mutate((_c, hcm) => {
    const routes = routesOf(hcm);
    routes.splice(routes.findIndex((r) => r.match.path === "/switchyard.plugins.v1.PluginService/Install"), 1);
  });
  one(check(text), /\/switchyard\.plugins\.v1\.PluginService\/Install is not routed/);
});

test("an internal RPC routed to a service is refused", () => {
  const text = mutate((_c, hcm) => {
    const r = routesOf(hcm).find((x) => x.match.path === "/switchyard.notify.v1.NotificationService/Publish");
    delete r.direct_response;
    r.route = { cluster: "gateway" };
  });
  one(check(text), /Publish is ACCESS_INTERNAL but the edge routes it/);
});

test("the filter order is enforced", () => {
  const text = mutate((_c, hcm) => {
    const [cors, grpcWeb, jwt, ...rest] = hcm.http_filters;
    hcm.http_filters = [cors, jwt, grpcWeb, ...rest];
  });
  one(check(text), /http_filters must be cors → grpc_web → jwt_authn → local_ratelimit → router/);
});

test("the issuer and audience must be auth's", () => {
  one(checkEnvoyYaml(original, { ...expect, issuer: "someone-else" }), /issuer is "switchyard-auth", but auth signs with "someone-else"/);
  one(checkEnvoyYaml(original, { ...expect, audience: "elsewhere" }), /audiences .* but auth signs for "elsewhere"/);
});

test("JWT is required exactly where the proto says", () => {
  const text = mutate((_c, hcm) => {
    const rules = hcm.http_filters[2].typed_config.rules;
    rules.find((r: any) => r.match.path === "/switchyard.auth.v1.AuthService/Login").requires = { provider_name: "switchyard" };
    delete rules.find((r: any) => r.match.path === "/switchyard.auth.v1.AuthService/GetMe").requires;
  });
  const problems = check(text);
  one(problems, /Login is public but jwt_authn requires a token/);
  one(problems, /GetMe needs a token but jwt_authn does not require one/);
});

test("retries: only idempotent RPCs, only on UNAVAILABLE", () => {
  const text = mutate((_c, hcm) => {
    const routes = routesOf(hcm);
    routes.find((r) => r.match.path === "/switchyard.auth.v1.AuthService/Register").route.retry_policy = { retry_on: "unavailable" };
    routes.find((r) => r.match.path === "/switchyard.auth.v1.AuthService/GetMe").route.retry_policy.retry_on = "5xx";
  });
  const problems = check(text);
  one(problems, /Register is not idempotent and must not be retried/);
  one(problems, /GetMe is idempotent: it must retry on "unavailable" only/);
});

test("CORS must expose grpc-status-details-bin and keep to the configured origins", () => {
  const text = mutate((_c, hcm) => {
    const cors = hcm.route_config.virtual_hosts[0].typed_per_filter_config["envoy.filters.http.cors"];
    cors.expose_headers = "grpc-status,grpc-message";
    cors.allow_origin_string_match = [{ safe_regex: { regex: ".*" } }];
  });
  const problems = check(text);
  one(problems, /CORS must expose grpc-status-details-bin/);
  one(problems, /CORS origins are .* but ALLOWED_ORIGINS is/);
});

test("`npm run envoy:check` exits 0 on the committed file and 1 naming the problem", () => {
  const ok = spawnSync(process.execPath, ["--import", "tsx", "envoy/cli.ts", "check"], { cwd: root, encoding: "utf8" });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /is valid/);
  const bad = join(tmp, "envoy.yaml");
  writeFileSync(bad, mutate((c) => (c.static_resources.clusters[0].conect_timeout = "1s")));
  const res = spawnSync(process.execPath, ["--import", "tsx", "envoy/cli.ts", "check", bad], { cwd: root, encoding: "utf8" });
  assert.equal(res.status, 1);
  assert.match(res.stderr, /"conect_timeout" is unknown/);
});

test("the schema is rebuilt from the shipped protos when its cache is missing", () => {
  const cache = join(tmp, "schema-cache");
  const path = envoySchemaPath(cache);
  assert.ok(existsSync(path));
  assert.ok(readFileSync(path).length > 500_000, "a descriptor set of Envoy's v3 API");
  assert.equal(envoySchemaPath(cache), path, "a second call reuses the cache");
});
