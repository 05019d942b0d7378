/**
 * `npm run new-service` in a temporary copy of the repository: a refused name
 * changes nothing; a good one gives a proto, a module, a migration and a test,
 * wired into `npm start`, gen/, envoy.yaml and docker compose, and the copy's
 * tests (the new service's own, the edge files' freshness and consistency)
 * pass.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";

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
  const before = readFileSync(join(copy, "services", "index.ts"), "utf8");
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
  assert.equal(readFileSync(join(copy, "services", "index.ts"), "utf8"), before);
  assert.equal(existsSync(join(copy, "services", "x")), false);
});

test("a new service is scaffolded, wired in, and its copy's tests pass", () => {
  const res = scaffold("ledger");
  assert.equal(res.status, 0, res.stderr + res.stdout);
  for (const f of [
    "proto/switchyard/ledger/v1/ledger.proto",
    "gen/switchyard/ledger/v1/ledger_pb.ts",
    "services/ledger/module.ts",
    "services/ledger/migrations/001_init.sql",
    "services/ledger/ledger.test.ts",
  ]) {
    assert.ok(existsSync(join(copy, f)), `${f} was written`);
  }
  assert.match(readFileSync(join(copy, "services", "index.ts"), "utf8"), /import \{ ledger \} from "\.\/ledger\/module\.js";[\s\S]*serviceModules[^\n]*, ledger\];/);
  assert.match(readFileSync(join(copy, "platform", "settings.ts"), "utf8"), /oneOf\([^)]*"ledger"\)/);

  const envoy = parse(readFileSync(join(copy, "envoy", "envoy.yaml"), "utf8"));
  assert.ok(envoy.static_resources.clusters.some((c: any) => c.name === "ledger"), "Envoy has a cluster for it");
  const routes: any[] = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes;
  assert.equal(routes.find((r) => r.match.path === "/switchyard.ledger.v1.LedgerService/Ping")?.route.cluster, "ledger");
  const compose = parse(readFileSync(join(copy, "docker-compose.yml"), "utf8"));
  assert.equal(compose.services.ledger.environment.SERVICES, "ledger");

  const check = spawnSync(process.execPath, ["--import", "tsx", "envoy/cli.ts", "check"], { cwd: copy, encoding: "utf8" });
  assert.equal(check.status, 0, check.stderr);

  const tests = spawnSync(process.execPath, ["scripts/test.mjs", "services/ledger", "envoy/envoy.test.ts", "test/edge/compose.test.ts"], {
    cwd: copy,
    encoding: "utf8",
    // Unset: inside a test runner it would make the nested runner report to us, not print.
    env: { ...process.env, NODE_TEST_CONTEXT: undefined },
  });
  assert.equal(tests.status, 0, `the copy's tests failed:\n${tests.stdout.slice(-4000)}\n${tests.stderr.slice(-2000)}`);
  // TAP ("# pass N") before Node 23, the spec reporter ("ℹ pass N") after, even when piped.
  assert.match(tests.stdout, /^(#|ℹ) pass \d+/m);
  assert.match(tests.stdout, /^(#|ℹ) fail 0$/m);
});
