/**
 * `npm start` as a separate process for the end-to-end tests: the command of
 * package.json's start script, on a free port, with its own database and
 * nats-server, killed (and its resources removed) by `stop()`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createTestDatabase, freePort, startNats } from "../support/infra.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** A running `npm start`. */
export interface NpmStart {
  readonly port: number;
  readonly baseUrl: string;
  /** The environment it runs with (DATABASE_URL, AUTH_MASTER_KEY, STORAGE_MASTER_KEY, NATS_URL, ...). */
  readonly env: Record<string, string>;
  /** What it printed so far (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

/** The start script's command (node's arguments), as package.json says it. */
export function startCommand(): string[] {
  const script = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts.start!;
  const words = script.split(/\s+/).filter(Boolean);
  if (words[0] !== "node") throw new Error(`the start script is not a node command: ${script}`);
  return words.slice(1);
}

/** Starts `npm start` with `extraEnv` and waits (at most `timeoutMs`) for /readyz. */
export async function startNpmStart(extraEnv: Record<string, string> = {}, timeoutMs = 90_000): Promise<NpmStart> {
  const db = await createTestDatabase("sy_e2e");
  const nats = await startNats();
  const port = await freePort();
  const env: Record<string, string> = {
    PORT: String(port),
    HOST: "127.0.0.1",
    DATABASE_URL: db.url,
    NATS_URL: nats.url,
    AUTH_MASTER_KEY: randomBytes(32).toString("base64"),
    STORAGE_MASTER_KEY: randomBytes(32).toString("base64"),
    LOG_LEVEL: "warn",
    SHUTDOWN_GRACE_MS: "1000",
    ...extraEnv,
  };
  let out = "";
  const child: ChildProcess = spawn(process.execPath, startCommand(), { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.on("data", (c: Buffer) => (out = (out + c.toString()).slice(-20_000)));
  child.stderr!.on("data", (c: Buffer) => (out = (out + c.toString()).slice(-20_000)));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const cleanup = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const done = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
      if (!done) child.kill("SIGKILL");
      await exited;
    }
    await nats.kill();
    await db.drop();
  };
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) {
      await cleanup();
      throw new Error(`npm start exited with ${child.exitCode} before it was ready:\n${out}`);
    }
    const ready = await fetch(`${baseUrl}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    if (Date.now() > deadline) {
      await cleanup();
      throw new Error(`npm start was not ready within ${timeoutMs / 1000} s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { port, baseUrl, env, output: () => out, stop: cleanup };
}
