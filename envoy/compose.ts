/**
 * Builds docker-compose.yml from the same topology as envoy.yaml: Envoy,
 * PostgreSQL with pgvector, NATS with JetStream, Jaeger (collector and trace
 * viewer, taking OTLP/HTTP), a one-shot migration, and one container per
 * service module (the same image; SERVICES= chooses), with the replica
 * counts of topology.ts.
 */
import { stringify } from "yaml";
import type { EdgeConfig } from "./edge-config.js";
import { generatedHeader } from "./generate.js";
import { describeDefault } from "../platform/index.js";
import { calledServiceUrls, hasServiceToken, type ModuleTopology, type Topology } from "./topology.js";

type Json = Record<string, unknown>;

/** Images of the infrastructure (pinned). */
export const images = {
  envoy: "envoyproxy/envoy:v1.32.3",
  postgres: "pgvector/pgvector:pg16",
  nats: "nats:2.10-alpine",
  jaeger: "jaegertracing/all-in-one:1.62.0",
  app: "switchyard:latest",
  /** Kubernetes only: waits for the migration Job (deploy/kubernetes). */
  kubectl: "bitnami/kubectl:1.31",
};

/** The container health check of a service: GET /readyz with node (the image has no curl). */
export const readyzCheck = [
  "CMD",
  "node",
  "-e",
  "fetch('http://127.0.0.1:8080/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))",
];

/** Where the services export spans in compose: Jaeger's OTLP/HTTP receiver. */
export const jaegerOtlp = "http://jaeger:4318";

const databaseUrl = "postgres://${POSTGRES_USER:-switchyard}:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}@postgres:5432/${POSTGRES_DB:-switchyard}";

/** Where compose reads a module's own secrets and settings: handed to that module's containers only, as Kubernetes hands it the Secret `switchyard-<name>`. */
export const moduleEnvFile = (module: string) => `secrets/${module}.env`;

/** Whether `m` has a file of its own: it declares variables or holds a service token. */
const hasModuleEnvFile = (m: ModuleTopology) => Object.keys(m.settings).length > 0 || hasServiceToken(m);

/** docker-compose.yml's content for `topology`. */
export function buildCompose(topology: Topology, config: EdgeConfig): Json {
  // `.env` (shared settings, never a module's secrets) reaches every container; a module's own file only its own.
  const app = (extra: Json, module?: ModuleTopology): Json => ({
    image: images.app,
    build: { context: ".", target: "runtime" },
    env_file: [{ path: ".env", required: false }, ...(module !== undefined && hasModuleEnvFile(module) ? [{ path: moduleEnvFile(module.name), required: false }] : [])],
    ...extra,
  });
  const sharedEnv = {
    DATABASE_URL: databaseUrl,
    NATS_URL: "nats://nats:4222",
    // Baked into envoy.yaml at generation time: the services must sign and check the same.
    AUTH_ISSUER: config.issuer,
    AUTH_AUDIENCE: config.audience,
    ALLOWED_ORIGINS: config.allowedOrigins.join(","),
    LOG_LEVEL: "${LOG_LEVEL:-info}",
    PORT: String(config.servicePort),
    // Spans go to the Jaeger container unless .env points elsewhere (empty turns tracing off).
    OTEL_EXPORTER_OTLP_ENDPOINT: `\${OTEL_EXPORTER_OTLP_ENDPOINT-${jaegerOtlp}}`,
    OTEL_TRACES_SAMPLER: "${OTEL_TRACES_SAMPLER:-parentbased_always_on}",
    OTEL_TRACES_SAMPLER_ARG: "${OTEL_TRACES_SAMPLER_ARG:-1}",
  };
  const services: Json = {
    envoy: {
      image: images.envoy,
      command: ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "info"],
      volumes: ["./envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro"],
      ports: [`\${EDGE_PORT:-${config.edgePort}}:${config.edgePort}`],
      depends_on: Object.fromEntries(topology.modules.map((m) => [m.name, { condition: "service_healthy" }])),
      restart: "unless-stopped",
    },
    postgres: {
      image: images.postgres,
      environment: {
        POSTGRES_USER: "${POSTGRES_USER:-switchyard}",
        POSTGRES_PASSWORD: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}",
        POSTGRES_DB: "${POSTGRES_DB:-switchyard}",
      },
      volumes: ["postgres-data:/var/lib/postgresql/data"],
      healthcheck: { test: ["CMD-SHELL", "pg_isready -U \"$${POSTGRES_USER}\" -d \"$${POSTGRES_DB}\""], interval: "5s", timeout: "3s", retries: 20 },
      restart: "unless-stopped",
    },
    nats: {
      image: images.nats,
      command: ["-js", "-sd", "/data", "-m", "8222"],
      volumes: ["nats-data:/data"],
      healthcheck: { test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8222/healthz?js-enabled-only=true"], interval: "5s", timeout: "3s", retries: 20 },
      restart: "unless-stopped",
    },
    // Collector and trace viewer in one: OTLP/HTTP on 4318, the UI on 16686 (in memory: traces do not survive a restart).
    jaeger: {
      image: images.jaeger,
      environment: { COLLECTOR_OTLP_ENABLED: "true" },
      ports: ["${JAEGER_UI_PORT:-16686}:16686"],
      restart: "unless-stopped",
    },
    migrate: app({
      command: ["npm", "run", "migrate"],
      environment: { DATABASE_URL: databaseUrl, NATS_URL: "nats://nats:4222", LOG_LEVEL: "${LOG_LEVEL:-info}" },
      // One-shot: no restart policy; the services wait for it to exit 0.
      depends_on: { postgres: { condition: "service_healthy" }, nats: { condition: "service_healthy" } },
    }),
  };
  for (const m of topology.modules) {
    // AUTH_MASTER_KEY and each AUTH_SERVICE_TOKEN come from the module's own file.
    const authEnv =
      m.name === "auth"
        ? { AUTH_TRUSTED_PROXY_HOPS: "1" } // Envoy is the one proxy in front: believe its x-forwarded-for.
        : m.services.length === 0
          ? {}
          : { AUTH_JWKS_URL: `http://auth:${config.servicePort}/.well-known/jwks.json` };
    services[m.name] = app({
      environment: { SERVICES: m.name, ...sharedEnv, OTEL_SERVICE_NAME: `switchyard-${m.name}`, ...authEnv, ...calledServiceUrls(m, config.servicePort) },
      depends_on: {
        migrate: { condition: "service_completed_successfully" },
        postgres: { condition: "service_healthy" },
        nats: { condition: "service_healthy" },
        jaeger: { condition: "service_started" },
      },
      healthcheck: { test: readyzCheck, interval: "5s", timeout: "3s", retries: 12, start_period: "20s" },
      ...(m.replicas > 1 ? { deploy: { replicas: m.replicas } } : {}),
      // The platform drains for up to 25 s after SIGTERM.
      stop_grace_period: "30s",
      restart: "unless-stopped",
    }, m);
  }
  return { name: "switchyard", services, volumes: { "postgres-data": {}, "nats-data": {} } };
}

/**
 * The examples of the modules' own files, by path (`secrets/<name>.env.example`):
 * each module's declared variables, its secrets and service token first to be
 * filled in, the rest commented out at their defaults.
 */
export function moduleEnvExamples(topology: Topology): Record<string, string> {
  const files: Record<string, string> = {};
  for (const m of topology.modules.filter(hasModuleEnvFile)) files[`${moduleEnvFile(m.name)}.example`] = moduleEnvExample(m);
  return files;
}

function moduleEnvExample(m: ModuleTopology): string {
  const vars = Object.entries(m.settings);
  const lines = [
    `docker compose hands ${moduleEnvFile(m.name)} to the ${m.name} containers and no other: copy this file there`,
    "and fill it in; never commit it (.gitignore keeps it out).",
  ].map((l) => `# ${l}`);
  const entry = (name: string, doc: string, active: boolean) => lines.push("", `# ${doc}`, `${active ? "" : "#"}${name}=`);
  for (const [name, v] of vars.filter(([, v]) => v.secret)) entry(name, `${v.doc} (secret)`, true);
  if (hasServiceToken(m)) entry("AUTH_SERVICE_TOKEN", `this module's service token (roles: service) for its calls to other modules: npm run auth:service-token -- ${m.name}`, true);
  for (const [name, v] of vars.filter(([, v]) => !v.secret)) entry(name, `${v.doc} (default: ${describeDefault(v).replace(/^\((.*)\)$/, "$1")})`, false);
  return generatedHeader(`the ${m.name} module's declared settings`) + lines.join("\n") + "\n";
}

/** Renders `compose` as docker-compose.yml text (deterministic). */
export function renderComposeYaml(compose: Json): string {
  return generatedHeader("the module declarations (app/catalogue.ts, via envoy/topology.ts)") + stringify(compose, { lineWidth: 0, aliasDuplicateObjects: false });
}
