/**
 * docker compose, Envoy's clusters, the Dockerfile and the service list agree.
 * No Docker engine runs here, so the files are read as data: the service list
 * (the module declarations, app/catalogue.ts) is the one source, and compose and Envoy are checked
 * against it and against each other.
 */
import type { DescService } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parse } from "yaml";
import { grpcCluster, httpCluster } from "../../envoy/generate.js";
import { readTopology, type Topology } from "../../envoy/topology.js";
import { ConfigError } from "../../platform/config.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { selectModules } from "../../app/catalogue.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const compose = parse(readFileSync(join(root, "docker-compose.yml"), "utf8"));
const envoy = parse(readFileSync(join(root, "envoy", "envoy.yaml"), "utf8"));
const clusters: any[] = envoy.static_resources.clusters;
let topology: Topology;

before(async () => {
  topology = await readTopology(root);
});

const appServices = () => Object.entries<any>(compose.services).filter(([, s]) => s.environment?.SERVICES !== undefined);

test("every module of the catalogue is its own container of the one image, SERVICES= choosing", () => {
  const byModule = new Map(appServices().map(([name, s]) => [s.environment.SERVICES, { name, ...s }]));
  assert.deepEqual([...byModule.keys()].sort(), topology.modules.map((m) => m.name).sort());
  for (const m of topology.modules) {
    const s = byModule.get(m.name)!;
    assert.equal(s.name, m.name, "the compose service is named after the module (Envoy resolves it by that name)");
    assert.equal(s.image, compose.services.migrate.image, `${m.name} runs the same image as the migration`);
    assert.equal(s.build.target, "runtime");
    assert.deepEqual(s.depends_on.migrate, { condition: "service_completed_successfully" }, `${m.name} waits for the migration`);
    assert.deepEqual(s.depends_on.postgres, { condition: "service_healthy" });
    assert.deepEqual(s.depends_on.nats, { condition: "service_healthy" });
    assert.match(s.healthcheck.test.join(" "), /\/readyz/, `${m.name} has a readiness health check`);
    assert.equal(s.deploy?.replicas ?? 1, m.replicas);
  }
  assert.equal(byModule.get("gateway")!.deploy.replicas, 2);
  assert.equal(byModule.get("chat")!.deploy.replicas, 2);
});

test("the infrastructure: Envoy with envoy.yaml, pgvector, NATS with JetStream on a volume, a one-shot migration", () => {
  const s = compose.services;
  assert.match(s.envoy.image, /^envoyproxy\/envoy:v\d/);
  assert.ok(s.envoy.volumes.includes("./envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro"));
  for (const m of topology.modules) assert.deepEqual(s.envoy.depends_on[m.name], { condition: "service_healthy" });
  assert.match(s.postgres.image, /^pgvector\/pgvector:/);
  assert.ok(s.postgres.healthcheck);
  assert.ok(s.nats.command.includes("-js"), "JetStream enabled");
  const store = s.nats.command[s.nats.command.indexOf("-sd") + 1];
  assert.ok(s.nats.volumes.some((v: string) => v.endsWith(`:${store}`) && compose.volumes[v.split(":")[0]!] !== undefined), "the JetStream store is a named volume");
  assert.deepEqual(s.migrate.command, ["npm", "run", "migrate"]);
  assert.equal(s.migrate.restart, undefined, "the migration runs once");
});

test("tracing: a Jaeger collector and viewer taking OTLP/HTTP, and every service exporting to it under its own name", () => {
  const s = compose.services;
  assert.match(s.jaeger.image, /^jaegertracing\/all-in-one:\d/);
  assert.equal(s.jaeger.environment.COLLECTOR_OTLP_ENABLED, "true");
  assert.ok(s.jaeger.ports.some((p: string) => p.endsWith(":16686")), "the trace viewer is published");
  for (const [name, svc] of appServices()) {
    assert.match(svc.environment.OTEL_EXPORTER_OTLP_ENDPOINT, /http:\/\/jaeger:4318/, `${name} exports to Jaeger's OTLP/HTTP port`);
    assert.equal(svc.environment.OTEL_SERVICE_NAME, `switchyard-${svc.environment.SERVICES}`);
  }
});

test("Envoy's clusters are exactly the compose services, on the port they serve", () => {
  const apps = new Map(appServices());
  const expected = topology.modules.flatMap((m) => [...(m.services.length ? [grpcCluster(m.name)] : []), ...(m.httpRoutes.length ? [httpCluster(m.name)] : [])]);
  assert.deepEqual(clusters.map((c) => c.name).sort(), expected.sort());
  for (const c of clusters) {
    const addr = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
    const svc = apps.get(addr.address);
    assert.ok(svc, `cluster ${c.name} points at "${addr.address}", which is no compose service`);
    assert.equal(String(addr.port_value), svc.environment.PORT, `cluster ${c.name} uses the port ${addr.address} serves on`);
    assert.equal(c.type, "STRICT_DNS", "every replica behind the DNS name is an endpoint");
  }
});

test("every container passes the token issuer and audience Envoy checks", () => {
  const jwt = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters.find((f: any) => f.name === "envoy.filters.http.jwt_authn");
  const provider = jwt.typed_config.providers.switchyard;
  for (const [name, s] of appServices()) {
    assert.equal(s.environment.AUTH_ISSUER, provider.issuer, name);
    assert.equal(s.environment.AUTH_AUDIENCE, provider.audiences[0], name);
  }
});

test("a module's secrets reach its own containers only: its file secrets/<name>.env, never .env, another module's file or an interpolated value", () => {
  const byModule = new Map(appServices().map(([, svc]) => [svc.environment.SERVICES as string, svc]));
  const exampleKeys = (path: string) =>
    readFileSync(join(root, path), "utf8")
      .split("\n")
      .map((l) => /^#?([A-Z][A-Z0-9_]*)=/.exec(l)?.[1])
      .filter((k): k is string => k !== undefined);
  const sharedKeys = exampleKeys(".env.example");
  const everySecret = topology.modules.flatMap((m) => Object.entries(m.settings).filter(([, v]) => v.secret).map(([name]) => name));
  assert.ok(everySecret.includes("AUTH_MASTER_KEY") && everySecret.includes("STRIPE_SECRET_KEY"), "the modules declare their secrets");
  for (const name of [...everySecret, "AUTH_SERVICE_TOKEN"]) assert.ok(!sharedKeys.some((k) => k.startsWith(name)), `.env.example (every container's) holds no ${name}`);

  for (const m of topology.modules) {
    const svc = byModule.get(m.name);
    const files: string[] = svc.env_file.map((f: { path: string }) => f.path);
    const own = `secrets/${m.name}.env`;
    assert.ok(files.every((f) => f === ".env" || f === own), `${m.name} reads ${files.join(", ")}: no other module's file`);
    const secrets = Object.entries(m.settings).filter(([, v]) => v.secret).map(([name]) => name);
    if (secrets.length > 0) {
      assert.ok(files.includes(own), `${m.name} reads its own file`);
      assert.deepEqual(exampleKeys(`${own}.example`).filter((k) => secrets.includes(k)), secrets, `${own}.example lists ${m.name}'s secrets`);
    }
    const interpolated = JSON.stringify(svc.environment);
    for (const name of [...everySecret, "AUTH_SERVICE_TOKEN"]) assert.ok(!interpolated.includes(name), `${m.name}'s environment names no ${name} (it would come from .env)`);
  }
  assert.ok(compose.services.migrate.env_file.every((f: { path: string }) => f.path === ".env"), "the migration reads no module's file");
});

test("SERVICES accepts every module of the service list, and nothing else", () => {
  const names = topology.modules.map((m) => m.name);
  assert.deepEqual(selectModules(readPlatformSettings({ SERVICES: names.join(",") }).SERVICES).map((m) => m.name), names);
  assert.throws(() => selectModules(readPlatformSettings({ SERVICES: "nosuch" }).SERVICES), (err: unknown) => err instanceof ConfigError && /SERVICES: unknown service "nosuch"/.test(err.message));
  assert.throws(() => readPlatformSettings({ SERVICES: "Bad Name" }), (err: unknown) => err instanceof ConfigError && /SERVICES/.test(err.message));
});

test("every service of the contracts is served by exactly one module", async () => {
  const found: DescService[] = [];
  const walk = async (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) await walk(p);
      else if (name.endsWith("_pb.ts")) {
        for (const v of Object.values(await import(pathToFileURL(p).href))) if ((v as DescService)?.kind === "service") found.push(v as DescService);
      }
    }
  };
  await walk(join(root, "gen", "switchyard"));
  const product = found.filter((s) => !s.typeName.startsWith("switchyard.testing."));
  for (const s of product) {
    const servers = topology.modules.filter((m) => m.services.includes(s)).map((m) => m.name);
    assert.equal(servers.length, 1, `${s.typeName} is served by ${servers.length ? servers.join(", ") : "no module"}`);
  }
});

/** Relative imports of a TypeScript file (static, type-only and dynamic). */
function relativeImports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]!);
  return specs.map((s) => resolve(dirname(file), s).replace(/\.js$/, ".ts")).filter((p) => existsSync(p));
}

test("the Dockerfile: multi-stage, and its runtime stage holds every file `npm start` loads", () => {
  const lines = readFileSync(join(root, "Dockerfile"), "utf8").split("\n");
  const stages = lines.filter((l) => /^FROM\s/i.test(l)).map((l) => /\sAS\s+(\S+)/i.exec(l)?.[1]);
  assert.ok(stages.length >= 2, "multi-stage");
  assert.equal(stages.at(-1), "runtime", "the last stage is the runtime compose builds");
  const runtime = lines.slice(lines.findIndex((l) => /^FROM\s.*\sAS\s+runtime/i.test(l)));
  const copied = runtime
    .filter((l) => /^COPY\s/i.test(l))
    .flatMap((l) => {
      const parts = l.replace(/--\S+/g, "").trim().split(/\s+/).slice(1);
      const dest = parts.at(-1)!;
      // "COPY a b ./dir/" copies each source into dir; "COPY src ./dst" copies src as dst.
      return dest.endsWith("/") && parts.length > 2 ? parts.slice(0, -1).map((p) => p.replace(/^\/app\//, "")) : [dest.replace(/^\.\//, "")];
    });
  const inImage = (file: string) => copied.some((c) => file === c || file.startsWith(`${c.replace(/\/$/, "")}/`));
  const seen = new Set<string>();
  const queue = [join(root, "app", "main.ts")];
  while (queue.length) {
    const f = queue.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    queue.push(...relativeImports(f));
  }
  const missing = [...seen].map((f) => relative(root, f)).filter((f) => !inImage(f));
  assert.deepEqual(missing, [], "files `npm start` imports that the runtime image lacks");
  assert.ok(inImage("web/dist/index.html"), "the built console is in the image");
  assert.match(runtime.find((l) => /^CMD\s/.test(l)) ?? "", /app\/main\.ts/);
});

test("the migration container's `npm run migrate` exists", (t) => {
  const scripts = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).scripts as Record<string, string>;
  if (scripts.migrate === undefined) {
    t.todo("package.json has no `migrate` script yet (issue 3, data)");
    return;
  }
  const file = /(\S+\.(?:ts|mjs|js))/.exec(scripts.migrate)?.[1];
  if (file) assert.ok(existsSync(join(root, file)), `${file} exists`);
});

test(".env.example names every variable docker-compose.yml reads from .env", () => {
  const example = readFileSync(join(root, ".env.example"), "utf8");
  const used = new Set([...readFileSync(join(root, "docker-compose.yml"), "utf8").matchAll(/(?<!\$)\$\{([A-Z0-9_]+)/g)].map((m) => m[1]!));
  for (const v of used) assert.match(example, new RegExp(`^#?\\s*${v}=`, "m"), `${v} is not in .env.example`);
});
