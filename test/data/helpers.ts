/**
 * Helpers shared by the data tests: bounded waits, /readyz, platform
 * settings for a test process, and the ledger fixture as a child process.
 */
import type { ChildProcess } from "node:child_process";
import { readPlatformSettings, type PlatformSettings } from "../../platform/settings.js";
import { spawnScript } from "../support/spawn.js";

export { waitFor } from "../support/wait.js";

/** GET /readyz: its status and body. */
export async function readyz(port: number): Promise<{ status: number; body: { ready: boolean; checks: Record<string, boolean> } }> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: res.status, body: (await res.json()) as { ready: boolean; checks: Record<string, boolean> } };
}

/** Platform settings for an in-process test server. */
export function testSettings(env: Record<string, string>): PlatformSettings {
  return readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", SHUTDOWN_GRACE_MS: "1000", ...env });
}

/** A ledger fixture process. */
export interface LedgerProcess {
  readonly port: number;
  readonly child: ChildProcess;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
}

/** Spawns test/data/fixtures/ledger-main.ts with `env`; resolves once it prints "ready <port>". */
export async function spawnLedger(env: Record<string, string>): Promise<LedgerProcess> {
  const { port, child, stop } = await spawnScript("test/data/fixtures/ledger-main.ts", {
    env: { PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "warn", SHUTDOWN_GRACE_MS: "1000", ...env },
    ready: /ready (\d+)/,
  });
  return { port, child, stop: () => stop() };
}
