/**
 * CPU time of a process, for benchmarks whose processes share a small
 * machine: CPU per operation is the figure that survives other work on it,
 * where rates and latencies mostly measure the scheduler. Linux only.
 */
import { readFileSync } from "node:fs";

/** Clock ticks per second of /proc/<pid>/stat on Linux. */
const TICKS_PER_SECOND = 100;

/** User + system CPU time of process `pid` so far, in ms; 0 when unreadable (elsewhere than Linux, or once it has exited). */
export function processCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces); utime and stime are the 14th and 15th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}
