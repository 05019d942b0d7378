/**
 * Child processes for tests and benches: a TypeScript script run with
 * `node --import tsx`, waited on until it serves.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { freePort } from "./infra.js";

/** A started child process. */
export interface Spawned {
  readonly child: ChildProcess;
  /** Its stdout and stderr so far (what is piped), in arrival order. */
  output(): string;
  /** Kills with `signal` (default SIGTERM) and waits for the exit; a no-op if it has exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** A script started by {@link spawnScript}. */
export interface ScriptProcess extends Spawned {
  /** The match of the ready pattern on stdout. */
  readonly match: RegExpExecArray;
  /** `Number(match[1])`: NaN if the pattern has no group. */
  readonly port: number;
}

/** A platform process started by {@link spawnPlatform}. */
export interface PlatformProcess extends Spawned {
  readonly port: number;
  /** `http://127.0.0.1:<port>` */
  readonly baseUrl: string;
}

function launch(
  script: string,
  o: { args?: string[]; env?: Record<string, string>; nodeArgs?: string[]; stdout?: "pipe" | "ignore"; stderr?: "pipe" | "inherit" },
): Spawned & { exited: () => boolean } {
  const child = spawn(process.execPath, [...(o.nodeArgs ?? []), "--import", "tsx", script, ...(o.args ?? [])], {
    env: { ...process.env, ...o.env },
    stdio: ["ignore", o.stdout ?? "pipe", o.stderr ?? "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exit = new Promise<void>((r) => child.once("exit", () => r()));
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  return {
    child,
    exited,
    output: () => out,
    async stop(signal = "SIGTERM") {
      if (exited()) return;
      child.kill(signal);
      await exit;
    },
  };
}

/**
 * Spawns `node [...nodeArgs] --import tsx <script> [...args]` with `env` over
 * process.env; resolves once its stdout so far matches `ready` (default
 * /port (\d+)/), rejects with the exit code and output if it exits first.
 */
export function spawnScript(
  script: string,
  options: { args?: string[]; env?: Record<string, string>; ready?: RegExp; nodeArgs?: string[]; stderr?: "pipe" | "inherit" } = {},
): Promise<ScriptProcess> {
  const ready = options.ready ?? /port (\d+)/;
  const p = launch(script, options);
  let stdout = "";
  return new Promise((resolve, reject) => {
    p.child.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
      const match = ready.exec(stdout);
      if (match) resolve({ child: p.child, match, port: Number(match[1]), output: p.output, stop: p.stop });
    });
    p.child.once("error", reject);
    p.child.once("exit", (code, signal) => reject(new Error(`${script} exited (${code ?? signal}) before it was ready:\n${p.output()}`)));
  });
}

/**
 * Spawns the platform (`script`, default app/main.ts) with PORT set to a
 * free port and `env` over process.env; resolves once GET /readyz (or with
 * `until: "serving"`, /healthz) answers 200 (polled every 100 ms). Throws
 * with its output if it exits first or is not ready within `timeoutMs`
 * (default SPAWN_READY_TIMEOUT_MS or 90000: a loaded 2-core machine starts a
 * process slowly, and failing later costs nothing when all is well; it is
 * killed then).
 */
export async function spawnPlatform(options: {
  env: Record<string, string>;
  nodeArgs?: string[];
  script?: string;
  timeoutMs?: number;
  stdout?: "pipe" | "ignore";
  /** The port to serve on (default: a free one), for tests whose env must name the process's own origin. */
  port?: number;
  /** What to wait for: "ready" (GET /readyz 200, the default) or "serving" (GET /healthz 200: listening, maybe not ready). */
  until?: "ready" | "serving";
}): Promise<PlatformProcess> {
  const port = options.port ?? (await freePort());
  const script = options.script ?? "app/main.ts";
  const timeoutMs = options.timeoutMs ?? Number(process.env.SPAWN_READY_TIMEOUT_MS ?? 90_000);
  const p = launch(script, { env: { ...options.env, PORT: String(port) }, nodeArgs: options.nodeArgs, stdout: options.stdout });
  const baseUrl = `http://127.0.0.1:${port}`;
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (p.exited()) throw new Error(`${script} exited (${p.child.exitCode ?? p.child.signalCode}) before it was ready:\n${p.output()}`);
    if (await fetch(`${baseUrl}/${options.until === "serving" ? "healthz" : "readyz"}`).then((r) => r.status === 200, () => false)) break;
    if (Date.now() > until) {
      p.child.kill("SIGKILL");
      throw new Error(`${script} not ready within ${timeoutMs} ms:\n${p.output()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child: p.child, port, baseUrl, output: p.output, stop: p.stop };
}
