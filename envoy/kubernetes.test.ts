/**
 * deploy/kubernetes/switchyard.yaml: every object passes the Kubernetes API
 * schema (kubernetes-models, offline), and the manifests say what the
 * module declarations say (a Deployment, headless Service and
 * PodDisruptionBudget per module with its replicas), so a drift between
 * them fails here as well as in envoy.test.ts's staleness check.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { Role, RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { ConfigMap, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import { platformVars } from "../platform/settings.js";
import { moduleSecrets, readTopology, type Topology } from "./topology.js";
import { terminationGraceSeconds, type KubeObject } from "./kubernetes.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const objects = parseAllDocuments(readFileSync(join(root, "deploy", "kubernetes", "switchyard.yaml"), "utf8")).map((d) => d.toJSON() as KubeObject);
const models: Record<string, new (o: never) => { validate(): void }> = {
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "batch/v1/Job": Job,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "rbac.authorization.k8s.io/v1/Role": Role,
  "rbac.authorization.k8s.io/v1/RoleBinding": RoleBinding,
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "v1/ServiceAccount": ServiceAccount,
};
const find = (kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name) as any;
let topology: Topology;

before(async () => {
  topology = await readTopology(root);
});

/** Validates `o` against its Kubernetes API schema; returns the problem, or undefined. */
function schemaProblem(o: KubeObject): string | undefined {
  const Model = models[`${o.apiVersion}/${o.kind}`];
  if (Model === undefined) return `${o.apiVersion} ${o.kind} ${o.metadata.name}: no schema known to this test`;
  try {
    new Model(o as never).validate();
    return undefined;
  } catch (err) {
    return `${o.kind} ${o.metadata.name}: ${(err as Error).message}`;
  }
}

test("every object passes the Kubernetes API schema (offline, kubernetes-models)", () => {
  assert.ok(objects.length > 10);
  assert.deepEqual(objects.map(schemaProblem).filter(Boolean), []);
});

test("the schema check catches a broken object", () => {
  const broken = structuredClone(find("Deployment", "gateway"));
  broken.spec.replicas = "two";
  delete broken.spec.selector;
  assert.ok(schemaProblem(broken), "a Deployment with a string replica count and no selector is refused");
});

test("a Deployment, headless Service and PodDisruptionBudget per module, as the module declarations say", () => {
  const deployments = objects.filter((o) => o.kind === "Deployment" && o.metadata.name !== "envoy").map((o) => o.metadata.name);
  assert.deepEqual(deployments, topology.modules.map((m) => m.name), "one Deployment per module, in order");
  const grace = terminationGraceSeconds(platformVars.SHUTDOWN_GRACE_MS.fallback as number);
  for (const m of topology.modules) {
    const d = find("Deployment", m.name);
    assert.equal(d.spec.replicas, m.replicas, `${m.name} replicas`);
    const pod = d.spec.template.spec;
    const c = pod.containers[0];
    assert.equal(c.env.find((e: any) => e.name === "SERVICES").value, m.name);
    assert.equal(c.readinessProbe.httpGet.path, "/readyz");
    assert.equal(c.livenessProbe.httpGet.path, "/healthz");
    assert.ok(c.startupProbe.grpc, `${m.name}: gRPC health probe`);
    assert.ok(c.lifecycle.preStop, `${m.name}: preStop`);
    assert.equal(pod.terminationGracePeriodSeconds, grace, "grace covers preStop + SHUTDOWN_GRACE_MS + module stops");
    assert.match(pod.initContainers[0].command.join(" "), /wait --for=condition=complete job\/switchyard-migrate/, "waits for the migration Job");
    assert.equal(find("Service", m.name).spec.clusterIP, "None", `${m.name}: headless`);
    assert.ok(find("PodDisruptionBudget", m.name));
  }
  assert.ok(find("Job", "switchyard-migrate"));
  assert.equal(find("Service", "envoy").spec.type, "LoadBalancer", "Envoy is the ingress");
  assert.ok(find("ConfigMap", "envoy-config").data["envoy.yaml"].includes("static_resources"));
});

test("NATS is a 3-node JetStream StatefulSet and every service runs with NATS_REPLICAS=3 listing the three nodes", () => {
  const nats = find("StatefulSet", "nats");
  assert.equal(nats.spec.replicas, 3);
  assert.match(find("ConfigMap", "nats-config").data["nats.conf"], /jetstream/);
  const config = find("ConfigMap", "switchyard-config").data;
  assert.equal(config.NATS_REPLICAS, "3");
  assert.equal(config.NATS_URL.split(",").length, 3);
  assert.deepEqual(find("Secret", "switchyard-secrets").stringData, { DATABASE_URL: "" }, "the shared Secret holds DATABASE_URL, left empty in the repository");
});

test("a module's secrets are in a Secret of its own (what compose reads from secrets/<module>.env), read by its pods only", () => {
  const containerOf = (name: string) => find("Deployment", name).spec.template.spec.containers[0];
  for (const m of topology.modules) {
    const keys = moduleSecrets(m);
    const own = `switchyard-${m.name}`;
    if (keys.length > 0) assert.deepEqual(find("Secret", own).stringData, Object.fromEntries(keys.map((k) => [k, ""])), `${own} holds ${m.name}'s secrets, empty`);
    const c = containerOf(m.name);
    const secretRefs = (c.envFrom ?? []).filter((e: any) => e.secretRef).map((e: any) => e.secretRef.name);
    assert.deepEqual(secretRefs, [own], `${m.name} reads its own Secret and no other module's`);
    const named = (c.env ?? []).map((e: any) => e.name);
    for (const other of topology.modules) for (const k of moduleSecrets(other)) assert.ok(!named.includes(k), `${m.name}'s env sets no ${k} (it comes from the module's Secret)`);
  }
  assert.ok(moduleSecrets(topology.modules.find((m) => m.name === "auth")!).includes("AUTH_MASTER_KEY"));
  assert.ok(moduleSecrets(topology.modules.find((m) => m.name === "storage")!).includes("STORAGE_MASTER_KEY"));
});
