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
import { jetstreamManager, StorageType, type JetStreamManager } from "@nats-io/jetstream";
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
  /**
   * Starts watching JetStream's leader-elected advisories, from a connection
   * to the nodes other than `node` (so none is missed while it dies), for
   * those of `streams` that `node` leads now. `elected` resolves with the
   * time (epoch ms) the last of them announced a new leader: the share of an
   * outage that is the server's own election (nats-server 2.9 draws each
   * stream's election timeout between 4 and 9 s). It rejects when they
   * have not all been elected within `ms` (default 60 s).
   */
  watchElections(node: ClusterNode, streams: readonly string[], ms?: number): Promise<Elections>;
  /** A connection to the cluster's running nodes and its manager (closed by `stop`). */
  manager(): Promise<{ nc: NatsConnection; jsm: JetStreamManager }>;
  /** Kills every node and removes the stores. */
  stop(): Promise<void>;
}

/** Leader elections being watched; see `NatsCluster.watchElections`. */
export interface Elections {
  /** The streams `node` led when the watch began (the ones watched). */
  readonly led: readonly string[];
  /** When the last of them announced a new leader (epoch ms); resolves at once when `led` is empty. */
  readonly elected: Promise<number>;
  /** Stops watching. */
  close(): Promise<void>;
}

const all = new Set<ChildProcess>();
const stores = new Set<string>();
process.once("exit", () => {
  for (const c of all) c.kill("SIGKILL");
  for (const d of stores) rmSync(d, { recursive: true, force: true });
});

/** Starts `size` nodes (default 3) and resolves once the cluster can place a stream with `size` replicas (every node has joined). */
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
    async watchElections(node, streams, ms = 60_000) {
      const led: string[] = [];
      for (const stream of streams) if ((await cluster.leaderOf(stream)) === node) led.push(stream);
      const nc = await connect({ servers: nodes.filter((n) => n !== node).map((n) => n.url), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
      const waiting = new Set(led);
      const sub = nc.subscribe(`${ELECTED_ADVISORY}.*`);
      const giveUp = setTimeout(() => sub.unsubscribe(), ms);
      const elected = (async () => {
        if (waiting.size === 0) return Date.now();
        for await (const m of sub) {
          const { stream, leader } = m.json<{ stream: string; leader: string }>();
          if (leader === node.name || !waiting.delete(stream)) continue;
          if (waiting.size === 0) return Date.now();
        }
        throw new Error(`${[...waiting].join(", ")} elected no new leader within ${ms} ms`);
      })().finally(() => clearTimeout(giveUp));
      elected.catch(() => undefined); // observed by whoever awaits it
      await nc.flush();
      return { led, elected, close: () => nc.close() };
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
  const { jsm } = await cluster.manager();
  await poll(30_000, `the cluster to place a stream on all ${size} nodes`, () => placesOnEveryNode(jsm, size));
  return cluster;
}

/**
 * Whether the cluster can create an R`size` stream now: JetStream answering
 * (a meta leader elected) is not enough, since the leader refuses with "no
 * suitable peers for placement" until every node has joined the meta group,
 * which a loaded machine can delay by seconds.
 */
async function placesOnEveryNode(jsm: JetStreamManager, size: number): Promise<true | undefined> {
  const name = "SY_CLUSTER_READY";
  try {
    await jsm.streams.add({ name, subjects: ["sy.cluster.ready"], storage: StorageType.Memory, num_replicas: size });
    await jsm.streams.delete(name);
    return true;
  } catch {
    return undefined;
  }
}

/** The subject prefix of JetStream's advisory that a stream elected a leader (the stream's name follows). */
const ELECTED_ADVISORY = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED";

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
