/**
 * The instance under soak: `npm start` exactly as package.json's start script
 * runs it, plus a sampler. Every SOAK_SAMPLE_MS it prints one line on stderr,
 * `SOAK {json}`: RSS and heap used as they are, the live heap after two forced
 * full GCs (run with --expose-gc), open file descriptors, and the event-loop
 * delay (p99 and max, ms) since the previous sample.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with node --expose-gc");
const everyMs = Number(process.env.SOAK_SAMPLE_MS ?? 10_000);

const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();
setInterval(() => {
  const { rss, heapUsed } = process.memoryUsage();
  const lagP99 = lag.percentile(99) / 1e6;
  const lagMax = lag.max / 1e6;
  gc();
  gc();
  const liveHeap = process.memoryUsage().heapUsed;
  const fds = readdirSync("/proc/self/fd").length;
  lag.reset(); // the forced GC's own pause falls in the next window; it is the same in every one
  process.stderr.write(`SOAK ${JSON.stringify({ at: Date.now(), rss, heapUsed, liveHeap, fds, lagP99, lagMax })}\n`);
}, everyMs).unref();

/** The entry module of `npm start` (the last word of the start script). */
const start = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: { start: string } }).scripts.start.trim().split(/\s+/).at(-1)!;
await import(pathToFileURL(join(root, start)).href);
