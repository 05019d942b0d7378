/**
 * Where an event's work goes, for bench:events: the statements a pool sends
 * (and how many are BEGINs, i.e. transactions), and the CPU time of the
 * other processes on the path (this database's PostgreSQL backends,
 * nats-server), read from /proc. Linux only; elsewhere the CPU reads 0.
 */
import { readFileSync, readdirSync } from "node:fs";
import type { Sql } from "postgres";
import { processCpuMs } from "../cpu.js";

const cpuUs = (pid: number) => processCpuMs(pid) * 1000;

/** The pid of the nats-server listening on `port`, if this machine shows it. */
export function natsServerPid(port: number): number | undefined {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (args[0]?.endsWith("nats-server") && args[args.indexOf("-p") + 1] === String(port)) return Number(entry);
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}

/** Counts what a pool sends: statements, and BEGINs among them. */
export interface StatementCount {
  readonly statements: number;
  readonly transactions: number;
  stop(): void;
}

/** Starts counting the statements `sql` sends (through postgres' debug hook). */
export function countStatements(sql: Sql): StatementCount {
  const options = sql.options as { debug?: unknown };
  const count = { statements: 0, transactions: 0, stop: () => void (options.debug = undefined) };
  options.debug = (_connection: number, query: string) => {
    count.statements++;
    if (/^\s*begin\b/i.test(query)) count.transactions++;
  };
  return count;
}

/** CPU of this database's client backends (those connected now) and of one more process, from a starting point. */
export async function startCpuMeter(admin: Sql, database: string, otherPid?: number): Promise<() => { postgresUs: number; otherUs: number }> {
  const backends = (await admin<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = ${database} and backend_type = 'client backend'`).map((r) => r.pid);
  const sum = () => backends.reduce((total, pid) => total + cpuUs(pid), 0);
  const postgres0 = sum();
  const other0 = otherPid === undefined ? 0 : cpuUs(otherPid);
  return () => ({ postgresUs: sum() - postgres0, otherUs: otherPid === undefined ? 0 : cpuUs(otherPid) - other0 });
}
