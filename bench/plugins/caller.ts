/**
 * The caller process of bench/plugins. Runs each path at 1 and 64 calls in
 * flight and prints one JSON line of results per path:
 *
 * - direct: the official SDK's MCP client (Streamable HTTP) calling the MCP
 *   server process itself: the least an MCP tool call costs;
 * - mesh:   the platform's service client (what chat uses) calling
 *   PluginService.CallPluginTool on the plugins process, which checks the
 *   installation, records the call id (exactly once), and calls the same
 *   server through its pooled SDK client.
 *
 *   BENCH_SERVICE_TOKEN=<token> node --import tsx bench/plugins/caller.ts <json config>
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { PluginService } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { createServiceClient, createServiceTransport } from "../../platform/index.js";

interface Config {
  mcpUrl: string;
  pluginsUrl: string;
  userId: string;
  pluginId: string;
  calls1: number;
  calls64: number;
}
const cfg = JSON.parse(process.argv[2]!) as Config;
const args = { text: "hello from the agent" };
const expected = `echo: ${args.text}`;

type Call = () => Promise<void>;

/**
 * Runs `n` calls with `inflight` workers: p50/p99 in ms and calls per second
 * of the calls that succeeded; failed calls are counted, with the first error.
 */
async function measure(call: Call, inflight: number, n: number) {
  for (let i = 0; i < Math.min(50, n / 4); i++) await call().catch(() => undefined); // warm up
  const lat: number[] = [];
  let errors = 0;
  let firstError = "";
  let left = n;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (left-- > 0) {
        const s = performance.now();
        try {
          await call();
          lat.push(performance.now() - s);
        } catch (err) {
          errors++;
          firstError ||= err instanceof Error ? err.message : String(err);
        }
      }
    }),
  );
  const wall = performance.now() - t0;
  lat.sort((a, b) => a - b);
  return { inflight, n, errors, firstError, p50: lat[Math.floor(lat.length * 0.5)] ?? NaN, p99: lat[Math.floor(lat.length * 0.99)] ?? NaN, cps: (lat.length / wall) * 1000 };
}

async function run(name: string, call: Call) {
  const rows = [await measure(call, 1, cfg.calls1), await measure(call, 64, cfg.calls64)];
  process.stdout.write(`${JSON.stringify({ name, rows })}\n`);
}

// direct: the SDK's client against the server
const sdk = new Client({ name: "bench-direct", version: "1.0.0" });
await sdk.connect(new StreamableHTTPClientTransport(new URL(cfg.mcpUrl)));
await run("direct", async () => {
  const r = await sdk.callTool({ name: "echo", arguments: args });
  const text = (r.content as { type: string; text?: string }[])[0]?.text;
  if (r.isError || text !== expected) throw new Error(`direct call failed: ${JSON.stringify(r)}`);
});
await sdk.close();

// mesh: CallPluginTool through the plugins service
const bearer: Interceptor = (next) => (req) => {
  req.header.set("authorization", `Bearer ${process.env.BENCH_SERVICE_TOKEN}`);
  return next(req);
};
const plugins = createServiceClient(PluginService, createServiceTransport(cfg.pluginsUrl, [bearer]));
const argumentsJson = JSON.stringify(args);
await run("mesh", async () => {
  const r = await plugins.callPluginTool({ userId: cfg.userId, pluginId: cfg.pluginId, toolName: "echo", callId: randomUUID(), argumentsJson, timeoutMs: 10_000 });
  if (r.isError || r.content !== expected) throw new Error(`mesh call failed: ${r.content}`);
});
process.exit(0);
