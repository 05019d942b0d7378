/**
 * What runs where, read from the modules' own declarations rather than
 * retyped: the modules of the catalogue (app/catalogue.ts, their names and
 * order), and for each the proto services it `serves` and the HTTP routes it
 * declares. Envoy's routes and clusters, the docker-compose services, the
 * Kubernetes manifests and the README's "What runs" table are all generated
 * from this one description; at start the platform refuses a module that
 * serves anything it did not declare.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Access } from "../gen/switchyard/options/v1/options_pb.js";
import { accessOf, rpcPath, serviceUrlVariable, type EnvVar, type ServiceModule } from "../platform/index.js";

/** A plain HTTP route the edge sends to a module (not an RPC). */
export interface EdgeHttpRoute {
  /** "exact": the path only; "prefix": the path and everything below it. */
  readonly match: "exact" | "prefix";
  readonly path: string;
  /** The HTTP methods the module answers there. */
  readonly methods: readonly string[];
  /** Whether the edge lets it through without a token (the route checks what it needs itself). */
  readonly public: boolean;
  /** Whether the route is a WebSocket upgrade. */
  readonly websocket?: boolean;
}

/** One module of the service list. */
export interface ModuleTopology {
  readonly name: string;
  /** Its one-line description (the README's "What runs"). */
  readonly summary: string;
  /** Proto services the module declares it serves. */
  readonly services: readonly DescService[];
  readonly httpRoutes: readonly EdgeHttpRoute[];
  readonly replicas: number;
  /** Whether it has migrations of its own. */
  readonly migrations: boolean;
  /** The modules it calls: the production shapes tell it where each serves (`<NAME>_URL`). */
  readonly calls: readonly string[];
  /** The variables only it reads (its declaration's `settings`). */
  readonly settings: Readonly<Record<string, EnvVar<unknown>>>;
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

/** The edge's view of a module's declared routes. */
function edgeRoutes(m: ServiceModule): EdgeHttpRoute[] {
  return (m.routes ?? []).map((r) => {
    const prefix = r.path.endsWith("/*");
    return { match: prefix ? "prefix" : "exact", path: prefix ? r.path.slice(0, -1) : r.path, methods: r.methods, public: r.access === "public", ...(r.websocket ? { websocket: true } : {}) };
  });
}

/**
 * Reads the service list of the repository at `root`: the modules of its
 * catalogue (app/catalogue.ts), each with what it declares it serves. Nothing
 * is started and no source text is parsed: the declarations are data.
 */
export async function readTopology(root: string): Promise<Topology> {
  const catalogue = (await import(pathToFileURL(join(root, "app", "catalogue.ts")).href)) as { serviceModules: readonly ServiceModule[] };
  return {
    modules: catalogue.serviceModules.map((m) => ({
      name: m.name,
      summary: m.summary,
      services: m.serves,
      httpRoutes: edgeRoutes(m),
      replicas: m.replicas ?? 1,
      migrations: m.migrations !== undefined,
      calls: m.calls ?? [],
      settings: m.settings ?? {},
    })),
  };
}

/** Whether `m` authenticates its calls to other modules with a service token of its own (AUTH_SERVICE_TOKEN); auth mints its own. */
export function hasServiceToken(m: ModuleTopology): boolean {
  return m.name !== "auth" && m.services.length > 0;
}

/** The secrets only `m` holds: its declared secret settings, and its service token. */
export function moduleSecrets(m: ModuleTopology): string[] {
  const declared = Object.entries(m.settings).filter(([, v]) => v.secret).map(([name]) => name);
  return hasServiceToken(m) ? [...declared, "AUTH_SERVICE_TOKEN"] : declared;
}

/** Where `m` finds each module it calls in a production shape: `<NAME>_URL` → http://<name>:<port> (compose service or Kubernetes Service). */
export function calledServiceUrls(m: ModuleTopology, port: number): Record<string, string> {
  return Object.fromEntries(m.calls.map((name) => [serviceUrlVariable(name), `http://${name}:${port}`]));
}
