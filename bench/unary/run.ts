/**
 * bench/unary: a small unary RPC through the full platform against a bare
 * grpc-js server, a bare connect-node handler and a raw node:http2 echo doing
 * the same work, at 1 and 64 calls in flight, with grpc-js and connect
 * clients, and the platform's own service client (platform/client.ts).
 * Servers and clients run in separate processes. Prints req/s, p50/p99, the
 * server's CPU per call, and each server's ratio to bare grpc-js in both.
 * "platform-traced" is the platform with OpenTelemetry tracing on, exporting
 * every SERVER span to a local OTLP/HTTP receiver run by this process
 * (test/support/otlp-receiver.ts); the platform client calling it traces
 * too, exporting its CLIENT spans to the same receiver.
 *
 *   npm run bench:unary [-- --ms 3000 --rounds 1 --only platform,platform-traced,grpc-js]
 */
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { startOtlpReceiver } from "../../test/support/otlp-receiver.js";
import { spawnScript } from "../../test/support/spawn.js";
import { processCpuMs } from "../cpu.js";

const { values } = parseArgs({
  options: { ms: { type: "string", default: "3000" }, rounds: { type: "string", default: "1" }, only: { type: "string", default: "" } },
});
const allServers = ["platform", "platform-traced", "grpc-js", "connect-node", "http2"] as const;
const servers = values.only ? allServers.filter((s) => s === "grpc-js" || values.only!.split(",").includes(s)) : allServers;
const receiver = await startOtlpReceiver({ keep: false });
const clients = ["grpc-js", "connect", "platform"] as const;
const inflights = [1, 64] as const;
const tsx = ["--import", "tsx"];

function runClient(kind: string, port: number, inflight: number, tracesTo?: string): Promise<{ rps: number; p50: number; p99: number; calls: number }> {
  const child = spawn(process.execPath, [...tsx, "bench/unary/client.ts", kind, String(port), String(inflight), values.ms!, ...(tracesTo ? [tracesTo] : [])], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) =>
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`client exited with ${code}`)))),
  );
}

type Row = { server: string; client: string; inflight: number; rps: number; p50: number; p99: number; cpuUs: number };
const rows: Row[] = [];
for (let round = 0; round < Number(values.rounds); round++) {
  for (const server of servers) {
    const { child, port } = await spawnScript("bench/unary/servers.ts", { args: [server, receiver.url], stderr: "inherit" });
    for (const client of clients) {
      for (const inflight of inflights) {
        const cpu0 = processCpuMs(child.pid!);
        // The platform client calling the traced platform traces too: both ends of each call make a span.
        const r = await runClient(client, port, inflight, server === "platform-traced" && client === "platform" ? receiver.url : undefined);
        const cpuUs = ((processCpuMs(child.pid!) - cpu0) * 1000) / r.calls;
        rows.push({ server, client, inflight, rps: r.rps, p50: r.p50, p99: r.p99, cpuUs });
      }
    }
    child.kill("SIGKILL");
  }
}

const best = (server: string, client: string, inflight: number) =>
  Math.max(...rows.filter((r) => r.server === server && r.client === client && r.inflight === inflight).map((r) => r.rps));
const leastCpu = (server: string, client: string, inflight: number) =>
  Math.min(...rows.filter((r) => r.server === server && r.client === client && r.inflight === inflight).map((r) => r.cpuUs));
console.log(`\nbench/unary: UnaryCall with a small message, ${values.ms} ms per cell, best of ${values.rounds} round(s)\n`);
console.log("server          client   in-flight     req/s   p50 ms   p99 ms   vs bare grpc-js   server CPU µs/call   vs bare grpc-js");
for (const client of clients) {
  for (const inflight of inflights) {
    const base = best("grpc-js", client, inflight);
    const baseCpu = leastCpu("grpc-js", client, inflight);
    for (const server of servers) {
      const r = rows.filter((x) => x.server === server && x.client === client && x.inflight === inflight).sort((a, b) => b.rps - a.rps)[0]!;
      console.log(
        `${server.padEnd(15)} ${client.padEnd(8)} ${String(inflight).padStart(9)} ${r.rps.toFixed(0).padStart(9)} ${r.p50.toFixed(3).padStart(8)} ${r.p99.toFixed(3).padStart(8)}   ${(r.rps / base).toFixed(2).padStart(14)}x   ${r.cpuUs.toFixed(0).padStart(18)}   ${(baseCpu / r.cpuUs).toFixed(2).padStart(14)}x`,
      );
    }
  }
}
const goal = best("platform", "grpc-js", 64) / best("grpc-js", "grpc-js", 64);
if (servers.includes("platform")) console.log(`\nplatform / bare grpc-js at 64 in flight over gRPC (grpc-js client): ${goal.toFixed(2)} (goal >= 0.85)`);
if (servers.includes("platform-traced")) {
  const traced = best("platform-traced", "grpc-js", 64) / best("grpc-js", "grpc-js", 64);
  const tracedCpu = leastCpu("grpc-js", "grpc-js", 64) / leastCpu("platform-traced", "grpc-js", 64);
  const plainCpu = leastCpu("grpc-js", "grpc-js", 64) / leastCpu("platform", "grpc-js", 64);
  console.log(`platform with tracing on (exporting) / bare grpc-js at 64 in flight over gRPC (grpc-js client): ${traced.toFixed(2)} in req/s, ${tracedCpu.toFixed(2)} in server CPU per call (goal >= 0.75)`);
  if (servers.includes("platform")) console.log(`platform without tracing / bare grpc-js, server CPU per call: ${plainCpu.toFixed(2)}`);
  console.log(`spans received by the local OTLP receiver: ${receiver.received()}`);
}
if (servers.includes("platform-traced")) {
  const tracedBoth = best("platform-traced", "platform", 64) / best("grpc-js", "grpc-js", 64);
  console.log(`platform client → platform server, both tracing and exporting / grpc-js client → bare grpc-js server at 64 in flight: ${tracedBoth.toFixed(2)} (goal >= 0.75)`);
}
if (servers.includes("platform")) {
  const clientGoal = best("platform", "platform", 64) / best("grpc-js", "grpc-js", 64);
  console.log(
    `platform client → platform server / grpc-js client → bare grpc-js server at 64 in flight: ${clientGoal.toFixed(2)} (goal >= 0.85); ` +
      `platform client / grpc-js client, both to bare grpc-js: ${(best("grpc-js", "platform", 64) / best("grpc-js", "grpc-js", 64)).toFixed(2)}`,
  );
}
await receiver.close();
