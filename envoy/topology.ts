/**
 * What runs where, derived from the code rather than retyped: the service
 * modules of `services/index.ts` (their names and order), and for each module
 * the proto services it registers, found by reading the `register(Service, …)`
 * calls in the module's own files. Envoy's routes and clusters and the
 * docker-compose services are all generated from this one description.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import ts from "typescript";
import { Access } from "../gen/switchyard/options/v1/options_pb.js";
import { accessOf } from "../platform/auth/token-check.js";
import { rpcPath } from "../platform/rpc/pipeline.js";
import type { ServiceModule } from "../platform/service.js";

/** A plain HTTP route the edge sends to a module (not an RPC). */
export interface EdgeHttpRoute {
  /** "exact": the path only; "prefix": the path and everything below it. */
  readonly match: "exact" | "prefix";
  readonly path: string;
  /** Whether the route is a WebSocket upgrade. */
  readonly websocket?: boolean;
}

/**
 * The HTTP routes served by modules, by module name. They are not in any
 * proto (JWKS, webhooks, the device WebSocket, the console), so they are
 * listed here once; a module not in services/index.ts simply contributes none.
 */
export const edgeHttpRoutes: Readonly<Record<string, readonly EdgeHttpRoute[]>> = {
  auth: [{ match: "exact", path: "/.well-known/jwks.json" }],
  billing: [{ match: "exact", path: "/billing/webhook" }],
  gateway: [{ match: "exact", path: "/ws/device", websocket: true }],
  web: [{ match: "prefix", path: "/" }],
};

/** How many containers of a module docker compose runs (1 when not listed). */
export const replicas: Readonly<Record<string, number>> = { gateway: 2, chat: 2 };

/** One module of the service list. */
export interface ModuleTopology {
  readonly name: string;
  /** Path of the module's source file, relative to the repository. */
  readonly file: string;
  /** Proto services the module registers, in the order found. */
  readonly services: readonly DescService[];
  readonly httpRoutes: readonly EdgeHttpRoute[];
  readonly replicas: number;
}

/** The whole service list. */
export interface Topology {
  readonly modules: readonly ModuleTopology[];
}

/** Who may call an RPC through the edge, from `(switchyard.options.v1.access)`. */
export type RpcAccess = "public" | "user" | "internal";

/** The access of `method` as its contract declares it: the same reading the platform's token check makes. */
export function rpcAccess(method: DescMethod): RpcAccess {
  const a = accessOf(method);
  return a === Access.PUBLIC ? "public" : a === Access.INTERNAL ? "internal" : "user";
}

/** Whether `method` may be retried: declared NO_SIDE_EFFECTS or IDEMPOTENT in the proto. */
export function isIdempotent(method: DescMethod): boolean {
  return method.idempotency !== 0; // 0 = IDEMPOTENCY_UNKNOWN
}

export { rpcPath };

/** Static import bindings of a source file: local name -> [module specifier, exported name]. */
function importsOf(sf: ts.SourceFile): Map<string, [string, string]> {
  const out = new Map<string, [string, string]>();
  for (const st of sf.statements) {
    if (!ts.isImportDeclaration(st) || !ts.isStringLiteral(st.moduleSpecifier)) continue;
    const named = st.importClause?.namedBindings;
    if (!named || !ts.isNamedImports(named)) continue;
    for (const el of named.elements) out.set(el.name.text, [st.moduleSpecifier.text, (el.propertyName ?? el.name).text]);
  }
  return out;
}

/** The .ts file a relative ".js" import names. */
function resolveTs(fromFile: string, spec: string): string | undefined {
  if (!spec.startsWith(".")) return undefined;
  const base = resolve(dirname(fromFile), spec);
  for (const candidate of [base.replace(/\.js$/, ".ts"), base, `${base}.ts`, join(base, "index.ts")]) {
    if (existsSync(candidate) && candidate.endsWith(".ts")) return candidate;
  }
  return undefined;
}

function parse(file: string): ts.SourceFile {
  return ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
}

/**
 * The proto services registered by the files reachable from `entry` through
 * relative imports that stay inside the module's folder: every
 * `register(X, …)` whose X is imported from a generated `_pb` file.
 */
async function servicesOfModule(entry: string): Promise<DescService[]> {
  const folder = dirname(entry);
  const seen = new Set<string>();
  const found: DescService[] = [];
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const sf = parse(file);
    const imports = importsOf(sf);
    for (const [spec] of imports.values()) {
      const target = resolveTs(file, spec);
      if (target && !relative(folder, target).startsWith("..")) queue.push(target);
    }
    const calls: string[] = [];
    const visit = (node: ts.Node) => {
      if (ts.isCallExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === "register") {
        const first = node.arguments[0];
        if (first && ts.isIdentifier(first)) calls.push(first.text);
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
    for (const local of calls) {
      const binding = imports.get(local);
      if (!binding || !/_pb\.js$/.test(binding[0])) continue;
      const genFile = resolveTs(file, binding[0]);
      if (!genFile) throw new Error(`${file}: cannot find the generated file ${binding[0]}`);
      const mod = (await import(pathToFileURL(genFile).href)) as Record<string, unknown>;
      const svc = mod[binding[1]] as DescService | undefined;
      if (svc?.kind !== "service") throw new Error(`${file}: ${binding[1]} from ${binding[0]} is not a service`);
      if (!found.includes(svc)) found.push(svc);
    }
  }
  return found;
}

/**
 * Reads the service list of the repository at `root`: the modules of
 * services/index.ts, each with the services it registers and its edge routes.
 * Throws when a module's source file cannot be found.
 */
export async function readTopology(root: string): Promise<Topology> {
  const indexFile = join(root, "services", "index.ts");
  const index = (await import(pathToFileURL(indexFile).href)) as { serviceModules: readonly ServiceModule[] };
  const moduleFiles = new Map<ServiceModule, string>();
  for (const [spec] of importsOf(parse(indexFile)).values()) {
    const file = resolveTs(indexFile, spec);
    if (!file) continue;
    const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    for (const value of Object.values(mod)) if (index.serviceModules.includes(value as ServiceModule)) moduleFiles.set(value as ServiceModule, file);
  }
  const modules: ModuleTopology[] = [];
  for (const m of index.serviceModules) {
    const file = moduleFiles.get(m);
    if (!file) throw new Error(`services/index.ts: cannot find the source file of module "${m.name}"`);
    modules.push({
      name: m.name,
      file: relative(root, file),
      services: await servicesOfModule(file),
      httpRoutes: edgeHttpRoutes[m.name] ?? [],
      replicas: replicas[m.name] ?? 1,
    });
  }
  return { modules };
}
