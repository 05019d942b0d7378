/**
 * `npm run new-service <name>`: scaffolds a service and wires it in.
 *
 * Writes proto/switchyard/<name>/v1/<name>.proto (package switchyard.<name>.v1,
 * a <Name>Service with one placeholder RPC), services/<name>/module.ts (its
 * declarations and handler), services/<name>/migrations/001_init.sql (applied
 * by `npm run migrate` and at start, because the module declares it) and a
 * test; adds the module to the catalogue (app/catalogue.ts); then
 * regenerates gen/ (buf generate, buf lint) and the edge files (envoy.yaml,
 * docker-compose.yml, the example of its secrets/<name>.env with its service token). Everything is checked before anything is written, so
 * a refused name changes nothing.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = process.env.SWITCHYARD_ROOT ?? join(dirname(fileURLToPath(import.meta.url)), "..");

/** Names that cannot be a service: infrastructure in compose, folders, JavaScript words. */
const reserved = new Set(
  ("envoy postgres nats migrate platform gen proto web test bench scripts services options common events testing " +
    "break case catch class const continue debugger default delete do else enum export extends false finally for function if " +
    "import in instanceof new null return super switch this throw true try typeof var void while with yield let static await implements interface package private protected public")
    .split(" "),
);

/** Thrown for a name or a repository the scaffolder refuses; its message says why. */
class ScaffoldError extends Error {}

function pascal(name: string): string {
  return name[0]!.toUpperCase() + name.slice(1);
}

/** The files of a new service, by path relative to the repository. */
export function scaffoldFiles(name: string): Record<string, string> {
  const Name = pascal(name);
  return {
    [`proto/switchyard/${name}/v1/${name}.proto`]: `syntax = "proto3";

package switchyard.${name}.v1;

import "switchyard/options/v1/options.proto";

// The ${name} service. Say here what it owns and who calls it.
//
// Every RPC may also answer RESOURCE_EXHAUSTED when the caller passes their
// tier's request rate.
service ${Name}Service {
  // Answers "pong, <name>": a placeholder showing the shape of an RPC. Public
  // so the scaffold runs without auth; real RPCs leave access unset (a user
  // token is required) unless they must be public.
  //
  // Errors: INVALID_ARGUMENT if name is missing or longer than 100
  // characters.
  rpc Ping(PingRequest) returns (PingResponse) {
    option (switchyard.options.v1.access) = ACCESS_PUBLIC;
    option idempotency_level = NO_SIDE_EFFECTS;
  }
}

// Request of Ping.
message PingRequest {
  // Who is asking.
  string name = 1 [(switchyard.options.v1.rules) = {
    required: true
    max_len: 100
  }];
}

// Response of Ping.
message PingResponse {
  // "pong, " followed by the request's name.
  string message = 1;
}
`,
    [`services/${name}/module.ts`]: `/** The ${name} service. Say here what it owns. */
import { ${Name}Service } from "../../gen/switchyard/${name}/v1/${name}_pb.js";
import { register, type ServiceModule } from "../../platform/index.js";

/** The ${name} module: \`SERVICES=${name}\` runs it alone. */
export const ${name}: ServiceModule = {
  name: "${name}",
  summary: "the ${name} service (scaffolded: say here what it owns)",
  serves: [${Name}Service],
  // Its schema's migrations (NNN_name.sql): \`npm run migrate\` and every start apply them, in order, once.
  migrations: new URL("./migrations/", import.meta.url),
  uses: ["db"],
  start: () => ({
    services: [
      register(${Name}Service, {
        async ping(req) {
          return { message: \`pong, \${req.name}\` };
        },
      }),
    ],
  }),
};
`,
    [`services/${name}/migrations/001_init.sql`]: `-- The ${name} service's first tables. Runs with schema "${name}" first on the
-- search_path (platform/db/migrate.ts); never edit an applied file, add 002_….
create table pings (
  id bigint generated always as identity primary key,
  name text not null,
  create_time timestamptz not null default now()
);
`,
    [`services/${name}/${name}.test.ts`]: `/** The ${name} service: its RPC on every protocol, its input rules, its migrations. */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import postgres from "postgres";
import { after, before, test } from "node:test";
import { ${Name}Service } from "../../gen/switchyard/${name}/v1/${name}_pb.js";
import { createLogger, migrate, readPlatformSettings, startProcess, type RunningProcess } from "../../platform/index.js";
import { createTestDatabase } from "../../test/support/infra.js";
import { ${name} } from "./module.js";

const ${name}Migrations = { service: ${name}.name, dir: ${name}.migrations! };
let proc: RunningProcess;
let serverDb: Awaited<ReturnType<typeof createTestDatabase>>;
before(async () => {
  serverDb = await createTestDatabase("sy_${name}_srv");
  const settings = readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", SHUTDOWN_GRACE_MS: "1000", DATABASE_URL: serverDb.url, RATE_LIMIT_ENABLED: "false" });
  proc = await startProcess([${name}], settings, createLogger("silent"));
});
after(async () => {
  await proc.stop();
  await serverDb.drop();
});

const transports = () => {
  const baseUrl = \`http://127.0.0.1:\${proc.port}\`;
  return {
    grpc: createGrpcTransport({ baseUrl }),
    "grpc-web": createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
    connect: createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  };
};

test("Ping answers on gRPC, gRPC-Web and Connect", async () => {
  for (const [protocol, transport] of Object.entries(transports())) {
    const res = await createClient(${Name}Service, transport).ping({ name: "ada" });
    assert.equal(res.message, "pong, ada", protocol);
  }
});

test("Ping without a name is INVALID_ARGUMENT", async () => {
  const client = createClient(${Name}Service, transports().grpc);
  await assert.rejects(client.ping({ name: "" }), (err: unknown) => ConnectError.from(err).code === Code.InvalidArgument);
  await assert.rejects(client.ping({ name: "x".repeat(101) }), (err: unknown) => ConnectError.from(err).code === Code.InvalidArgument);
});

test("its migrations apply to an empty database, once", async () => {
  const db = await createTestDatabase("sy_${name}");
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  try {
    const applied = await migrate(sql, [${name}Migrations]);
    assert.ok(applied.some((f) => f.service === "${name}" && f.name === "001_init.sql"));
    assert.deepEqual(await migrate(sql, [${name}Migrations]), [], "a second run applies nothing");
    const [row] = await sql\`insert into ${name}.pings (name) values ('ada') returning name\`;
    assert.equal(row!.name, "ada");
  } finally {
    await sql.end();
    await db.drop();
  }
});
`,
  };
}

/** app/catalogue.ts with the module imported and listed last. */
function wireCatalogue(text: string, name: string): string {
  const list = /(export const serviceModules: readonly ServiceModule\[\] = \[)([^\]]*)(\];)/;
  const match = list.exec(text);
  if (!match) throw new ScaffoldError("app/catalogue.ts: cannot find `export const serviceModules: readonly ServiceModule[] = [...]`");
  const lastImport = [...text.matchAll(/^import .*;$/gm)].at(-1);
  if (!lastImport) throw new ScaffoldError("app/catalogue.ts: no import statements found");
  const at = lastImport.index! + lastImport[0].length;
  const withImport = `${text.slice(0, at)}\nimport { ${name} } from "../services/${name}/module.js";${text.slice(at)}`;
  return withImport.replace(list, (_m, open: string, items: string, close: string) => `${open}${items.trim()}, ${name}${close}`);
}

function run(cmd: string, args: string[]) {
  execFileSync(cmd, args, { cwd: root, stdio: ["ignore", "inherit", "inherit"] });
}

/** Scaffolds `name` into the repository; throws ScaffoldError for a refused name. */
export function newService(name: string): string[] {
  if (!/^[a-z][a-z0-9]{1,29}$/.test(name)) {
    throw new ScaffoldError(`"${name}" is not a service name: use 2 to 30 lower-case letters and digits, starting with a letter (it names a proto package, a schema, a container and a DNS name)`);
  }
  if (reserved.has(name)) throw new ScaffoldError(`"${name}" is reserved (infrastructure, a folder or a JavaScript word): choose another name`);
  const files = scaffoldFiles(name);
  const catalogue = readFileSync(join(root, "app", "catalogue.ts"), "utf8");
  if (new RegExp(`\\b${name}\\b`).test(/serviceModules[^\n]*/.exec(catalogue)?.[0] ?? "") || existsSync(join(root, "services", name)) || existsSync(join(root, "proto", "switchyard", name))) {
    throw new ScaffoldError(`a service named "${name}" already exists`);
  }
  for (const path of Object.keys(files)) if (existsSync(join(root, path))) throw new ScaffoldError(`${path} already exists`);
  const newCatalogue = wireCatalogue(catalogue, name);

  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  writeFileSync(join(root, "app", "catalogue.ts"), newCatalogue);
  const bin = (tool: string) => join(root, "node_modules", ".bin", tool);
  run(bin("buf"), ["lint"]);
  run(bin("buf"), ["generate"]);
  run(process.execPath, ["--import", "tsx", "envoy/cli.ts", "generate"]);
  return [...Object.keys(files), "app/catalogue.ts", "gen/", "envoy/envoy.yaml", "docker-compose.yml", "deploy/kubernetes/switchyard.yaml", `secrets/${name}.env.example`];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const name = process.argv[2];
  if (!name || process.argv.length > 3) {
    process.stderr.write("usage: npm run new-service <name>\n");
    process.exit(2);
  }
  try {
    const changed = newService(name);
    process.stdout.write(
      `\nscaffolded service "${name}":\n  ${changed.join("\n  ")}\n\n` +
        `next: describe the service in its proto, replace Ping with real RPCs (npm run generate && npm run envoy after each proto change),\n` +
        `and run its test: node scripts/test.mjs services/${name}\n`,
    );
  } catch (err) {
    process.stderr.write(`new-service: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(err instanceof ScaffoldError ? 1 : 3);
  }
}
