/**
 * Builds deploy/kubernetes/switchyard.yaml from the same topology as
 * docker-compose.yml and envoy.yaml: per module a Deployment (its replicas,
 * readiness on /readyz, a gRPC health startup probe, liveness on /healthz,
 * preStop and a grace period consistent with SHUTDOWN_GRACE_MS), a headless
 * Service (Envoy balances across the pods itself) and a PodDisruptionBudget;
 * the migration as a Job the Deployments wait for; Envoy as the ingress
 * Deployment behind a LoadBalancer Service; NATS as a 3-node JetStream
 * StatefulSet with NATS_REPLICAS=3; a Secret for DATABASE_URL, and per module
 * a Secret of its own holding its declared secrets and service token (what
 * compose reads from secrets/<module>.env), so no module sees another's.
 * PostgreSQL is not in it: point DATABASE_URL at a
 * managed server or at a primary and its standby (several hosts,
 * target_session_attrs=read-write).
 *
 * To add a component (e.g. a tracing collector), write a function returning
 * its objects and append them in `buildKubernetes`.
 */
import { stringify } from "yaml";
import { platformVars } from "../platform/settings.js";
import { images } from "./compose.js";
import type { EdgeConfig } from "./edge-config.js";
import { generatedHeader } from "./generate.js";
import { calledServiceUrls, moduleSecrets, type ModuleTopology, type Topology } from "./topology.js";

/** A Kubernetes object as plain data. */
export type KubeObject = { apiVersion: string; kind: string; metadata: { name: string; [k: string]: unknown }; [k: string]: unknown };

/** Nodes of the NATS StatefulSet, and so the replicas of every stream and bucket. */
export const NATS_NODES = 3;
/** Seconds the pod keeps serving after it is marked terminating, so endpoints drop it before SIGTERM. */
export const PRESTOP_SECONDS = 5;
const SECRET = "switchyard-secrets";
const CONFIG = "switchyard-config";
const MIGRATE_JOB = "switchyard-migrate";
const WAITER = "switchyard-wait-for-migration";
const NATS = "nats";
const PORT_NAME = "http";

/** The grace period of a service pod: preStop, then SHUTDOWN_GRACE_MS of draining, then 5 s for module stops. */
export function terminationGraceSeconds(shutdownGraceMs: number): number {
  return PRESTOP_SECONDS + Math.ceil(shutdownGraceMs / 1000) + 5;
}

/** The NATS_URL of the StatefulSet: every node through its stable DNS name. */
export function natsClusterUrl(): string {
  return Array.from({ length: NATS_NODES }, (_, i) => `nats://${NATS}-${i}.${NATS}:4222`).join(",");
}

/** Every object of the deployment, in apply order. */
export function buildKubernetes(topology: Topology, config: EdgeConfig, envoyYaml: string): KubeObject[] {
  const shutdownGraceMs = platformVars.SHUTDOWN_GRACE_MS.fallback as number;
  return [
    ...secretsAndConfig(config, shutdownGraceMs),
    ...topology.modules.flatMap(moduleSecret),
    ...natsStatefulSet(),
    ...migration(),
    ...topology.modules.flatMap((m) => moduleObjects(m.name, m.replicas, m.services.length > 0, calledServiceUrls(m, config.servicePort), config, shutdownGraceMs)),
    ...envoy(config, envoyYaml),
  ];
}

/** Renders the objects as one multi-document YAML file (deterministic). */
export function renderKubernetesYaml(objects: readonly KubeObject[]): string {
  const docs = objects.map((o) => stringify(o, { lineWidth: 0, aliasDuplicateObjects: false }));
  return generatedHeader("services/index.ts and envoy/topology.ts (with docker-compose.yml)") + docs.join("---\n");
}

const labels = (component: string) => ({ "app.kubernetes.io/name": "switchyard", "app.kubernetes.io/component": component });

/** A Secret whose keys are `keys`, every value left empty: secrets never live in the repository. */
function emptySecret(name: string, component: string, keys: readonly string[]): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, labels: labels(component), annotations: { "switchyard/fill-in": "replace every value before applying (kubectl create secret generic --dry-run=client -o yaml)" } },
    type: "Opaque",
    stringData: Object.fromEntries(keys.map((k) => [k, ""])),
  };
}

/** The Secret `switchyard-<name>` of a module that holds secrets of its own; only its pods read it. */
function moduleSecret(m: ModuleTopology): KubeObject[] {
  const keys = moduleSecrets(m);
  return keys.length === 0 ? [] : [emptySecret(moduleSecretName(m.name), "secrets", keys)];
}

const moduleSecretName = (module: string) => `switchyard-${module}`;

function secretsAndConfig(config: EdgeConfig, shutdownGraceMs: number): KubeObject[] {
  return [
    emptySecret(SECRET, "secrets", ["DATABASE_URL"]),
    {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: CONFIG, labels: labels("config") },
      data: {
        NATS_URL: natsClusterUrl(),
        NATS_REPLICAS: String(NATS_NODES),
        AUTH_ISSUER: config.issuer,
        AUTH_AUDIENCE: config.audience,
        ALLOWED_ORIGINS: config.allowedOrigins.join(","),
        LOG_LEVEL: "info",
        PORT: String(config.servicePort),
        SHUTDOWN_GRACE_MS: String(shutdownGraceMs),
      },
    },
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: WAITER, labels: labels("migration") } },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name: WAITER, labels: labels("migration") },
      rules: [{ apiGroups: ["batch"], resources: ["jobs"], verbs: ["get", "list", "watch"] }],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: WAITER, labels: labels("migration") },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: WAITER },
      subjects: [{ kind: "ServiceAccount", name: WAITER }],
    },
  ];
}

function natsStatefulSet(): KubeObject[] {
  const routes = Array.from({ length: NATS_NODES }, (_, i) => `nats://${NATS}-${i}.${NATS}:6222`).join(", ");
  const conf = [
    "port: 4222",
    "http_port: 8222",
    "server_name: $SERVER_NAME",
    "pid_file: /var/run/nats/nats.pid",
    "jetstream { store_dir: /data }",
    `cluster { name: switchyard, port: 6222, routes: [ ${routes} ] }`,
    "lame_duck_duration: 10s",
    "",
  ].join("\n");
  return [
    { apiVersion: "v1", kind: "ConfigMap", metadata: { name: `${NATS}-config`, labels: labels(NATS) }, data: { "nats.conf": conf } },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: NATS, labels: labels(NATS) },
      spec: {
        clusterIP: "None", // stable per-node names (nats-0.nats) for routes and NATS_URL
        publishNotReadyAddresses: true, // nodes must find each other before they are ready
        selector: labels(NATS),
        ports: [
          { name: "client", port: 4222, targetPort: 4222 },
          { name: "cluster", port: 6222, targetPort: 6222 },
          { name: "monitor", port: 8222, targetPort: 8222 },
        ],
      },
    },
    {
      apiVersion: "apps/v1",
      kind: "StatefulSet",
      metadata: { name: NATS, labels: labels(NATS) },
      spec: {
        serviceName: NATS,
        replicas: NATS_NODES,
        podManagementPolicy: "Parallel",
        selector: { matchLabels: labels(NATS) },
        template: {
          metadata: { labels: labels(NATS) },
          spec: {
            terminationGracePeriodSeconds: 60,
            affinity: spreadAcrossNodes(NATS),
            containers: [
              {
                name: NATS,
                image: images.nats,
                args: ["-c", "/etc/nats/nats.conf"],
                env: [{ name: "SERVER_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } }],
                ports: [
                  { name: "client", containerPort: 4222 },
                  { name: "cluster", containerPort: 6222 },
                  { name: "monitor", containerPort: 8222 },
                ],
                readinessProbe: { httpGet: { path: "/healthz?js-enabled-only=true", port: 8222 }, periodSeconds: 5 },
                livenessProbe: { httpGet: { path: "/healthz?js-enabled-only=true", port: 8222 }, periodSeconds: 10, failureThreshold: 6, initialDelaySeconds: 10 },
                // Lame-duck mode hands clients to the other nodes before the process stops.
                lifecycle: { preStop: { exec: { command: ["nats-server", "--signal", "ldm=/var/run/nats/nats.pid"] } } },
                volumeMounts: [
                  { name: "config", mountPath: "/etc/nats" },
                  { name: "pid", mountPath: "/var/run/nats" },
                  { name: "data", mountPath: "/data" },
                ],
              },
            ],
            volumes: [
              { name: "config", configMap: { name: `${NATS}-config` } },
              { name: "pid", emptyDir: {} },
            ],
          },
        },
        volumeClaimTemplates: [
          { metadata: { name: "data" }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "10Gi" } } } },
        ],
      },
    },
    pdb(NATS, labels(NATS)),
  ];
}

function migration(): KubeObject[] {
  return [
    {
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name: MIGRATE_JOB, labels: labels("migration") },
      spec: {
        backoffLimit: 10,
        template: {
          metadata: { labels: labels("migration") },
          spec: {
            restartPolicy: "OnFailure",
            containers: [
              {
                name: "migrate",
                image: images.app,
                command: ["npm", "run", "migrate"],
                envFrom: [{ configMapRef: { name: CONFIG } }],
                env: [secretEnv("DATABASE_URL")],
              },
            ],
          },
        },
      },
    },
  ];
}

function moduleObjects(name: string, replicas: number, servesRpcs: boolean, calledUrls: Record<string, string>, config: EdgeConfig, shutdownGraceMs: number): KubeObject[] {
  const sel = { ...labels("service"), "switchyard/module": name };
  // AUTH_MASTER_KEY and AUTH_SERVICE_TOKEN come from the module's own Secret.
  const authEnv =
    name === "auth"
      ? [{ name: "AUTH_TRUSTED_PROXY_HOPS", value: "1" }]
      : servesRpcs
        ? [{ name: "AUTH_JWKS_URL", value: `http://auth:${config.servicePort}/.well-known/jwks.json` }]
        : [];
  return [
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name, labels: sel },
      spec: {
        replicas,
        selector: { matchLabels: sel },
        strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
        template: {
          metadata: { labels: sel },
          spec: {
            serviceAccountName: WAITER,
            terminationGracePeriodSeconds: terminationGraceSeconds(shutdownGraceMs),
            affinity: spreadAcrossNodes(name),
            initContainers: [
              {
                // The services start on a migrated schema: wait for the Job to complete.
                name: "wait-for-migration",
                image: images.kubectl,
                command: ["kubectl", "wait", "--for=condition=complete", `job/${MIGRATE_JOB}`, "--timeout=600s"],
              },
            ],
            containers: [
              {
                name,
                image: images.app,
                // The module's own secrets (e.g. STORAGE_MASTER_KEY, STRIPE_SECRET_KEY, LLM_API_KEY) in a Secret of its own, so no module sees another's.
                envFrom: [{ configMapRef: { name: CONFIG } }, { secretRef: { name: moduleSecretName(name), optional: true } }],
                env: [
                  { name: "SERVICES", value: name },
                  secretEnv("DATABASE_URL"),
                  ...authEnv,
                  ...Object.entries(calledUrls).map(([variable, value]) => ({ name: variable, value })),
                ],
                ports: [{ name: PORT_NAME, containerPort: config.servicePort }],
                startupProbe: { grpc: { port: config.servicePort }, periodSeconds: 2, failureThreshold: 60 },
                readinessProbe: { httpGet: { path: "/readyz", port: PORT_NAME }, periodSeconds: 5, failureThreshold: 2 },
                livenessProbe: { httpGet: { path: "/healthz", port: PORT_NAME }, periodSeconds: 10, failureThreshold: 3 },
                lifecycle: { preStop: { exec: { command: ["node", "-e", `setTimeout(() => {}, ${PRESTOP_SECONDS * 1000})`] } } },
                resources: { requests: { cpu: "250m", memory: "256Mi" }, limits: { memory: "1Gi" } },
              },
            ],
          },
        },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, labels: sel },
      // Headless: Envoy (STRICT_DNS) and gRPC clients see every pod and balance across them.
      spec: { clusterIP: "None", selector: sel, ports: [{ name: PORT_NAME, port: config.servicePort, targetPort: PORT_NAME }] },
    },
    pdb(name, sel),
  ];
}

function envoy(config: EdgeConfig, envoyYaml: string): KubeObject[] {
  const sel = labels("edge");
  return [
    { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "envoy-config", labels: sel }, data: { "envoy.yaml": envoyYaml } },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "envoy", labels: sel },
      spec: {
        replicas: 2,
        selector: { matchLabels: sel },
        template: {
          metadata: { labels: sel },
          spec: {
            terminationGracePeriodSeconds: 30,
            affinity: spreadAcrossNodes("edge"),
            containers: [
              {
                name: "envoy",
                image: images.envoy,
                command: ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "info"],
                ports: [{ name: "edge", containerPort: config.edgePort }],
                readinessProbe: { tcpSocket: { port: "edge" }, periodSeconds: 5 },
                livenessProbe: { tcpSocket: { port: "edge" }, periodSeconds: 10 },
                volumeMounts: [{ name: "config", mountPath: "/etc/envoy" }],
              },
            ],
            volumes: [{ name: "config", configMap: { name: "envoy-config" } }],
          },
        },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "envoy", labels: sel },
      spec: { type: "LoadBalancer", selector: sel, ports: [{ name: "edge", port: config.edgePort, targetPort: "edge" }] },
    },
    pdb("envoy", sel),
  ];
}

function pdb(name: string, selector: Record<string, string>): KubeObject {
  // One pod at a time: a 3-node NATS keeps its quorum, a 2-replica module keeps serving.
  return { apiVersion: "policy/v1", kind: "PodDisruptionBudget", metadata: { name, labels: selector }, spec: { maxUnavailable: 1, selector: { matchLabels: selector } } };
}

function secretEnv(key: string) {
  return { name: key, valueFrom: { secretKeyRef: { name: SECRET, key } } };
}

function spreadAcrossNodes(component: string) {
  return {
    podAntiAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [
        { weight: 100, podAffinityTerm: { topologyKey: "kubernetes.io/hostname", labelSelector: { matchLabels: { "app.kubernetes.io/component": component } } } },
      ],
    },
  };
}
