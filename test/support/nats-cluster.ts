/**
 * A 3-node (or n-node) nats-server JetStream cluster on loopback, for tests
 * and benches that kill and restart nodes: nats-server from PATH, free
 * client and route ports, each node's store in a temporary folder removed
 * by `stop()` (and at exit). A killed node restarts on its own store and
 * rejoins (nats-server 2.9: about 3 s to heal).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { freePort, isListening } from "./infra.js";

/** One node of the cluster. */
export interface ClusterNode {
  /** Its server name (`-n`), as stream infos report leaders and replicas. */
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly storeDir: string;
  /** Whether its process runs now. */
  running(): boolean;
  /** Kills it (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on its store; resolves once it accepts clients. */
  start(): Promise<void>;
}

/** A running cluster. */
export interface NatsCluster {
  readonly nodes: readonly ClusterNode[];
  /** Every node's URL, comma-separated (a NATS_URL value). */
  readonly url: string;
  /** The URLs of the running nodes other than `node`, comma-separated. */
  urlWithout(node: ClusterNode): string;
  /** The node leading `stream` now (asks the cluster; retries through elections up to `ms`). */
  leaderOf(stream: string, ms?: number): Promise<ClusterNode>;
  /** Resolves once `stream` has a leader and every replica is current (caught up), or rejects after `ms`. */
  healed(stream: string, ms?: number): Promise<void>;
  /** A connection to the cluster's running nodes and its manager (closed by `stop`). */
  manager(): Promise<{ nc: NatsConnection; jsm: JetStreamManager }>;
  /** Kills every node and removes the stores. */
  stop(): Promise<void>;
}

const all = new Set<ChildProcess>();
const stores = new Set<string>();
process.once("exit", () => {
  for (const c of all) c.kill("SIGKILL");
  for (const d of stores) rmSync(d, { recursive: true, force: true });
});

/** Starts `size` nodes (default 3) and resolves once JetStream answers on the cluster (a meta leader is elected). */
export async function startNatsCluster(size = 3, clusterName = "sy"): Promise<NatsCluster> {
  const ports = await Promise.all(Array.from({ length: size }, async () => ({ client: await freePort(), route: await freePort() })));
  const routes = ports.map((p) => `nats://127.0.0.1:${p.route}`).join(",");
  const nodes = ports.map((p, i) => createNode(`n${i + 1}`, p.client, p.route, routes, clusterName));
  await Promise.all(nodes.map((n) => n.start()));
  let shared: { nc: NatsConnection; jsm: JetStreamManager } | undefined;
  const url = nodes.map((n) => n.url).join(",");
  const cluster: NatsCluster = {
    nodes,
    url,
    urlWithout: (node) => nodes.filter((n) => n !== node && n.running()).map((n) => n.url).join(","),
    async manager() {
      if (shared === undefined || shared.nc.isClosed()) {
        const nc = await connect({ servers: nodes.map((n) => n.url), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
        shared = { nc, jsm: await jetstreamManager(nc, { timeout: 3000, checkAPI: false }) };
      }
      return shared;
    },
    async leaderOf(stream, ms = 30_000) {
      const { jsm } = await cluster.manager();
      const leader = await poll(ms, `a leader of ${stream}`, async () => {
        const info = await jsm.streams.info(stream).catch(() => undefined);
        return info?.cluster?.leader;
      });
      const node = nodes.find((n) => n.name === leader);
      if (node === undefined) throw new Error(`${stream} is led by ${leader}, not a node of this cluster`);
      return node;
    },
    async healed(stream, ms = 60_000) {
      const { jsm } = await cluster.manager();
      await poll(ms, `${stream} to have a leader and ${size - 1} current replicas`, async () => {
        const info = await jsm.streams.info(stream).catch(() => undefined);
        const replicas = info?.cluster?.replicas ?? [];
        const ok = info?.cluster?.leader !== undefined && replicas.length === size - 1 && replicas.every((r) => r.current && !r.offline);
        return ok || undefined;
      });
    },
    async stop() {
      await shared?.nc.close().catch(() => undefined);
      await Promise.all(nodes.map((n) => n.kill()));
      for (const n of nodes) {
        rmSync(n.storeDir, { recursive: true, force: true });
        stores.delete(n.storeDir);
      }
    },
  };
  // JetStream answers once a meta leader is elected (about 0.4 s).
  const { jsm } = await cluster.manager();
  await poll(30_000, "the cluster's JetStream to answer", () => jsm.getAccountInfo().then(() => true, () => undefined));
  return cluster;
}

function createNode(name: string, port: number, routePort: number, routes: string, clusterName: string): ClusterNode {
  const storeDir = mkdtempSync(join(tmpdir(), `sy-natsc-${name}-`));
  stores.add(storeDir);
  let child: ChildProcess | undefined;
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  return {
    name,
    port,
    url: `nats://127.0.0.1:${port}`,
    storeDir,
    running,
    async start() {
      if (running()) return;
      const args = ["-a", "127.0.0.1", "-p", String(port), "-n", name, "-js", "-sd", storeDir, "--cluster_name", clusterName, "--cluster", `nats://127.0.0.1:${routePort}`, "--routes", routes];
      const c = spawn("nats-server", args, { stdio: "ignore" });
      child = c;
      all.add(c);
      c.once("exit", () => all.delete(c));
      await poll(15_000, `nats-server ${name} to listen on ${port}`, async () => {
        if (c.exitCode !== null) throw new Error(`nats-server ${name} exited (${c.exitCode}); is nats-server on PATH?`);
        return (await isListening(port)) || undefined;
      });
    },
    async kill(signal = "SIGKILL") {
      const c = child;
      if (c === undefined || !running()) return;
      const exited = new Promise((r) => c.once("exit", r));
      c.kill(signal);
      await exited;
    },
  };
}

/** Polls `probe` every 100 ms until it returns a value other than undefined; throws naming `what` after `ms`. */
async function poll<T>(ms: number, what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
