/**
 * `npm run new-service` in a temporary copy of the repository: a refused name
 * changes nothing; a good one gives a proto, a module, a migration and a test,
 * wired into `npm start`, gen/, envoy.yaml and docker compose, and the copy's
 * tests (the new service's own, the edge files' freshness and consistency)
 * pass; with no other edit `npm run migrate` applies its migration and
 * `npm start` serves it (reflection lists it, its RPC answers).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { randomBytes } from "node:crypto";
import { createTestDatabase } from "../test/support/infra.js";
import { spawnPlatform } from "../test/support/spawn.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const copy = mkdtempSync(join(tmpdir(), "sy-scaffold-"));
const skip = new Set(["node_modules", ".git", ".data", "test-results"]);

before(() => {
  cpSync(root, copy, {
    recursive: true,
    filter: (src) => {
      const rel = relative(root, src);
      const top = rel.split("/")[0]!;
      return !skip.has(top) && rel !== "web/dist" && !/\.tmp-\d/.test(rel);
    },
  });
  symlinkSync(join(root, "node_modules"), join(copy, "node_modules"), "dir");
});
after(() => rmSync(copy, { recursive: true, force: true }));

const scaffold = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "scripts/new-service.ts", ...args], { cwd: copy, encoding: "utf8" });

test("a refused name changes nothing and says why", () => {
  const before = readFileSync(join(copy, "app", "catalogue.ts"), "utf8");
  for (const [name, why] of [
    ["auth", /already exists/],
    ["Bad-Name", /not a service name/],
    ["x", /not a service name/],
    ["postgres", /reserved/],
    ["delete", /reserved/],
  ] as const) {
    const res = scaffold(name);
    assert.equal(res.status, 1, `${name}: ${res.stderr}`);
    assert.match(res.stderr, why, name);
  }
  assert.equal(readFileSync(join(copy, "app", "catalogue.ts"), "utf8"), before);
  assert.equal(existsSync(join(copy, "services", "x")), false);
});

test("a new service is scaffolded, wired in, and its copy's tests pass", () => {
  const res = scaffold("inventory");
  assert.equal(res.status, 0, res.stderr + res.stdout);
  for (const f of [
    "proto/switchyard/inventory/v1/inventory.proto",
    "gen/switchyard/inventory/v1/inventory_pb.ts",
    "services/inventory/module.ts",
    "services/inventory/migrations/001_init.sql",
    "services/inventory/inventory.test.ts",
  ]) {
    assert.ok(existsSync(join(copy, f)), `${f} was written`);
  }
  assert.match(readFileSync(join(copy, "app", "catalogue.ts"), "utf8"), /import \{ inventory \} from "\.\.\/services\/inventory\/module\.js";[\s\S]*serviceModules[^\n]*, inventory\];/);

  const envoy = parse(readFileSync(join(copy, "envoy", "envoy.yaml"), "utf8"));
  assert.ok(envoy.static_resources.clusters.some((c: any) => c.name === "inventory"), "Envoy has a cluster for it");
  const routes: any[] = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes;
  assert.equal(routes.find((r) => r.match.path === "/switchyard.inventory.v1.InventoryService/Ping")?.route.cluster, "inventory");
  const compose = parse(readFileSync(join(copy, "docker-compose.yml"), "utf8"));
  assert.equal(compose.services.inventory.environment.SERVICES, "inventory");
  assert.match(readFileSync(join(copy, "secrets", "inventory.env.example"), "utf8"), /^AUTH_SERVICE_TOKEN=$/m, "its own file's example holds its service token");

  const check = spawnSync(process.execPath, ["--import", "tsx", "envoy/cli.ts", "check"], { cwd: copy, encoding: "utf8" });
  assert.equal(check.status, 0, check.stderr);

  const tests = spawnSync(process.execPath, ["scripts/test.mjs", "services/inventory", "envoy/envoy.test.ts", "test/edge/compose.test.ts"], {
    cwd: copy,
    encoding: "utf8",
    // Unset: inside a test runner it would make the nested runner report to us, not print.
    env: { ...process.env, NODE_TEST_CONTEXT: undefined },
  });
  assert.equal(tests.status, 0, `the copy's tests failed:\n${tests.stdout.slice(-4000)}\n${tests.stderr.slice(-2000)}`);
  assert.match(tests.stdout, /^(#|ℹ) pass \d+$/m);
  assert.match(tests.stdout, /^(#|ℹ) fail 0$/m);
});

test("with no other edit, npm run migrate applies its migration to a fresh database and npm start serves it", async () => {
  const db = await createTestDatabase("sy_scaffold");
  try {
    const env = { ...process.env, DATABASE_URL: db.url, AUTH_MASTER_KEY: randomBytes(32).toString("base64"), LOG_LEVEL: "warn", NODE_TEST_CONTEXT: undefined };
    const migrated = spawnSync(process.execPath, ["--import", "tsx", "scripts/migrate.ts"], { cwd: copy, encoding: "utf8", env });
    assert.equal(migrated.status, 0, migrated.stderr);
    assert.match(migrated.stdout, /inventory\/001_init\.sql/);

    const app = await spawnPlatform({ script: join(copy, "app", "main.ts"), timeoutMs: 120_000, env: { DATABASE_URL: db.url, SERVICES: "inventory", RATE_LIMIT_ENABLED: "false", LOG_LEVEL: "warn" } });
    try {
      const listed = spawnSync(join(root, "node_modules", ".bin", "buf"), ["curl", "--http2-prior-knowledge", "--protocol", "grpc", "--list-services", app.baseUrl], { encoding: "utf8" });
      assert.equal(listed.status, 0, listed.stderr);
      assert.ok(listed.stdout.split("\n").includes("switchyard.inventory.v1.InventoryService"), listed.stdout);
      const res = await fetch(`${app.baseUrl}/switchyard.inventory.v1.InventoryService/Ping`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"name":"ada"}' });
      assert.deepEqual(await res.json(), { message: "pong, ada" });
    } finally {
      await app.stop();
    }
  } finally {
    await db.drop();
  }
});
