/**
 * bench/plugins: a server-side plugin tool call through the mesh (a service
 * client → PluginService.CallPluginTool → the plugins service's MCP client →
 * the MCP server) beside the official SDK's client calling the same MCP
 * server directly, at 1 and 64 calls in flight. Caller, plugins service and
 * MCP server each run in their own process, on the machine's PostgreSQL
 * and a private nats-server.
 *
 *   npm run bench:plugins [-- --calls1 300 --calls64 2000]
 */
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { PluginService, ToolRuntime } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { startTestKeys } from "../../test/gateway/support.js";
import { createTestDatabase, startNats } from "../../test/support/infra.js";
import { spawnPlatform, spawnScript } from "../../test/support/spawn.js";

const { values } = parseArgs({ options: { calls1: { type: "string", default: "300" }, calls64: { type: "string", default: "2000" } } });
const children: ChildProcess[] = [];
process.once("exit", () => children.forEach((c) => c.kill("SIGKILL")));

interface Row {
  inflight: number;
  n: number;
  p50: number;
  p99: number;
  cps: number;
  errors: number;
  firstError: string;
}
const results = new Map<string, Row[]>();
const keys = await startTestKeys();
const db = await createTestDatabase("sy_bench_plugins");
// A private nats-server: the plugins service declares its durable consumers on the events stream.
const nats = await startNats();
try {
  const mcp = await spawnScript("bench/plugins/mcp-server.ts", { ready: /port (\d+)/ });
  children.push(mcp.child);
  const mcpUrl = `http://127.0.0.1:${mcp.match[1]}/mcp`;
  const plugins = await spawnPlatform({
    env: { SERVICES: "plugins", HOST: "127.0.0.1", LOG_LEVEL: "warn", DATABASE_URL: db.url, NATS_URL: nats.url, AUTH_JWKS_URL: keys.jwksUrl, RATE_LIMIT_ENABLED: "false", PLUGINS_ALLOWED_HOSTS: "127.0.0.1" },
    stdout: "ignore",
    timeoutMs: 90_000,
  });
  children.push(plugins.child);

  const bearer =
    (token: string): Interceptor =>
    (next) =>
    (req) => (req.header.set("authorization", `Bearer ${token}`), next(req));
  const as = async (sub: string, roles: string[] = []) => createClient(PluginService, createGrpcTransport({ baseUrl: plugins.baseUrl, interceptors: [bearer(await keys.mint(sub, { roles }))] }));
  const pluginId = "bench-echo";
  const userId = `bench${randomBytes(4).toString("hex")}`;
  await (await as("service:bench", ["service"])).upsertPlugin({
    pluginId,
    displayName: "Bench echo",
    category: "testing",
    publisher: "Bench",
    version: "1.0.0",
    minTier: Tier.FREE,
    tools: [{ name: "echo", description: "Echoes its text.", inputSchema: { type: "object" }, runtime: ToolRuntime.SERVER }],
    mcpEndpoint: mcpUrl,
  });
  await (await as(userId)).install({ pluginId });

  const config = { mcpUrl, pluginsUrl: plugins.baseUrl, userId, pluginId, calls1: Number(values.calls1), calls64: Number(values.calls64) };
  const caller = spawn(process.execPath, ["--import", "tsx", "bench/plugins/caller.ts", JSON.stringify(config)], {
    env: { ...process.env, BENCH_SERVICE_TOKEN: await keys.mint("service:bench-chat", { roles: ["service"] }) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(caller);
  let out = "";
  caller.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => caller.once("exit", r));
  if (code !== 0) throw new Error(`caller failed (${code}):\n${out}`);
  for (const line of out.trim().split("\n")) {
    const r = JSON.parse(line) as { name: string; rows: Row[] };
    results.set(r.name, r.rows);
  }
} finally {
  for (const c of children) c.kill("SIGKILL");
  await db.drop().catch(() => undefined);
  await nats.kill();
  await keys.close();
}

const f = (n: number, d = 3) => n.toFixed(d);
const labels: Record<string, string> = {
  direct: "SDK client → MCP server (baseline)",
  mesh: "CallPluginTool → plugins → MCP",
};
console.log(`\nbench/plugins: an MCP tool call (echo) from another process, ${values.calls1} calls at 1 in flight, ${values.calls64} at 64; one 2-core machine\n`);
console.log(`${"path".padEnd(36)} in-flight   calls/s   p50 ms   p99 ms   p50/baseline  calls/s/baseline  errors`);
for (const inflight of [1, 64]) {
  const base = results.get("direct")!.find((r) => r.inflight === inflight)!;
  for (const [name, rows] of results) {
    const r = rows.find((x) => x.inflight === inflight)!;
    console.log(`${labels[name]!.padEnd(36)} ${String(inflight).padStart(9)} ${f(r.cps, 0).padStart(9)} ${f(r.p50).padStart(8)} ${f(r.p99).padStart(8)} ${f(r.p50 / base.p50, 2).padStart(13)}x ${f(r.cps / base.cps, 2).padStart(16)}x ${String(r.errors).padStart(7)}${r.errors > 0 ? ` (first: ${r.firstError})` : ""}`);
  }
}
process.exit(0);
