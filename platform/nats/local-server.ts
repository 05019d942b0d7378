/**
 * `npm start` without NATS_URL: use the nats-server on 127.0.0.1:4222, or
 * start `nats-server -js` from PATH with its store under the data folder, or
 * stop with a message saying how to get one.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, mkdirSync } from "node:fs";
import net from "node:net";
import { delimiter, join } from "node:path";

/** The URL used when NATS_URL is unset. */
export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

/** A nats-server this process started; stopping it lets it flush its store. */
export interface LocalNats {
  readonly url: string;
  stop(): Promise<void>;
}

/** Thrown when no server listens and none can be started; its message says what to do. */
export class NoNatsServerError extends Error {
  constructor(url = DEFAULT_NATS_URL) {
    super(
      `nothing listens on ${url} and nats-server is not on PATH. ` +
        "Install it (Debian/Ubuntu: apt-get install nats-server; or a release from https://github.com/nats-io/nats-server/releases, " +
        "or `docker run -p 4222:4222 nats -js`), or set NATS_URL to a running server with JetStream.",
    );
    this.name = "NoNatsServerError";
  }
}

/** Where to look and listen; the defaults are `npm start`'s. */
export interface LocalNatsOptions {
  readonly port?: number;
  /** The PATH searched for nats-server (default: the process's). */
  readonly searchPath?: string;
}

/**
 * Makes sure a nats-server with JetStream answers on 127.0.0.1:4222 (or
 * `port`): returns undefined when one already listens, else starts one
 * (store in `storeDir`) and resolves once it listens. Rejects with
 * NoNatsServerError when nats-server is not on PATH, or when it does not
 * come up in 10 s.
 */
export async function ensureLocalNats(storeDir: string, options: LocalNatsOptions = {}): Promise<LocalNats | undefined> {
  const port = options.port ?? 4222;
  const url = `nats://127.0.0.1:${port}`;
  if (await listening(port)) return undefined;
  const bin = findOnPath("nats-server", options.searchPath ?? process.env.PATH ?? "");
  if (bin === undefined) throw new NoNatsServerError(url);
  mkdirSync(storeDir, { recursive: true });
  const child: ChildProcess = spawn(bin, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir], { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const until = Date.now() + 10_000;
  while (!(await listening(port))) {
    if (child.exitCode !== null || Date.now() > until) {
      child.kill("SIGKILL");
      throw new Error(`nats-server (${bin}) did not start listening on 127.0.0.1:${port}; is the port taken or ${storeDir} unwritable?`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function findOnPath(name: string, searchPath: string): string | undefined {
  for (const dir of searchPath.split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}
