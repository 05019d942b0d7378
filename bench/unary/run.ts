/**
 * bench/unary: a small unary RPC through the full platform against a bare
 * grpc-js server, a bare connect-node handler and a raw node:http2 echo doing
 * the same work, at 1 and 64 calls in flight, with grpc-js and connect
 * clients. Servers and clients run in separate processes. Prints req/s,
 * p50/p99 and each server's ratio to bare grpc-js. "platform-traced" is the
 * platform with OpenTelemetry tracing on, exporting every SERVER span to a
 * local OTLP/HTTP receiver run by this process (test/support/otlp-receiver.ts).
 *
 *   npm run bench:unary [-- --ms 3000 --rounds 1 --only platform,platform-traced,grpc-js]
 */
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { startOtlpReceiver } from "../../test/support/otlp-receiver.js";
import { spawnScript } from "../../test/support/spawn.js";

const { values } = parseArgs({
  options: { ms: { type: "string", default: "3000" }, rounds: { type: "string", default: "1" }, only: { type: "string", default: "" } },
});
const allServers = ["platform", "platform-traced", "grpc-js", "connect-node", "http2"] as const;
const servers = values.only ? allServers.filter((s) => s === "grpc-js" || values.only!.split(",").includes(s)) : allServers;
const receiver = await startOtlpReceiver({ keep: false });
const clients = ["grpc-js", "connect"] as const;
const inflights = [1, 64] as const;
const tsx = ["--import", "tsx"];

function runClient(kind: string, port: number, inflight: number): Promise<{ rps: number; p50: number; p99: number }> {
  const child = spawn(process.execPath, [...tsx, "bench/unary/client.ts", kind, String(port), String(inflight), values.ms!], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) =>
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`client exited with ${code}`)))),
  );
}

type Row = { server: string; client: string; inflight: number; rps: number; p50: number; p99: number };
const rows: Row[] = [];
for (let round = 0; round < Number(values.rounds); round++) {
  for (const server of servers) {
    const { child, port } = await spawnScript("bench/unary/servers.ts", { args: [server, receiver.url], stderr: "inherit" });
    for (const client of clients) {
      for (const inflight of inflights) {
        const r = await runClient(client, port, inflight);
        rows.push({ server, client, inflight, ...r });
      }
    }
    child.kill("SIGKILL");
  }
}

const best = (server: string, client: string, inflight: number) =>
  Math.max(...rows.filter((r) => r.server === server && r.client === client && r.inflight === inflight).map((r) => r.rps));
console.log(`\nbench/unary: UnaryCall with a small message, ${values.ms} ms per cell, best of ${values.rounds} round(s)\n`);
console.log("server          client   in-flight     req/s   p50 ms   p99 ms   vs bare grpc-js");
for (const client of clients) {
  for (const inflight of inflights) {
    const base = best("grpc-js", client, inflight);
    for (const server of servers) {
      const r = rows.filter((x) => x.server === server && x.client === client && x.inflight === inflight).sort((a, b) => b.rps - a.rps)[0]!;
      console.log(
        `${server.padEnd(15)} ${client.padEnd(8)} ${String(inflight).padStart(9)} ${r.rps.toFixed(0).padStart(9)} ${r.p50.toFixed(3).padStart(8)} ${r.p99.toFixed(3).padStart(8)}   ${(r.rps / base).toFixed(2)}x`,
      );
    }
  }
}
const goal = best("platform", "grpc-js", 64) / best("grpc-js", "grpc-js", 64);
if (servers.includes("platform")) console.log(`\nplatform / bare grpc-js at 64 in flight over gRPC (grpc-js client): ${goal.toFixed(2)} (goal >= 0.85)`);
if (servers.includes("platform-traced")) {
  const traced = best("platform-traced", "grpc-js", 64) / best("grpc-js", "grpc-js", 64);
  console.log(`platform with tracing on (exporting) / bare grpc-js at 64 in flight over gRPC (grpc-js client): ${traced.toFixed(2)} (goal >= 0.75)`);
  console.log(`spans received by the local OTLP receiver: ${receiver.received()}`);
}
await receiver.close();
