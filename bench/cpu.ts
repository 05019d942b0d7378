/**
 * CPU time of a process, for benchmarks whose processes share a small
 * machine: CPU per operation is the figure that survives other work on it,
 * where rates and latencies mostly measure the scheduler. Linux only.
 */
import { readFileSync } from "node:fs";

/** User + system CPU time of process `pid` so far, in ms (clock ticks of 10 ms); NaN when unreadable. */
export function processCpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return Number.NaN;
  }
}
