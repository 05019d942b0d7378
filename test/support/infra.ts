/**
 * The real infrastructure tests talk to: a PostgreSQL server and a nats-server
 * with JetStream. Each is used where one already listens (CI starts them, so
 * does this machine); otherwise the harness starts its own on a free port and
 * stops it when the test process exits. Nothing is mocked.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, existsSync, readdirSync, readFileSync, chownSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { waitFor } from "./wait.js";

const children: ChildProcess[] = [];
process.once("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Whether something accepts TCP connections at host:port. */
export function isListening(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.once("error", reject);
  });
}

async function waitForPort(port: number, what: string, ms = 15_000): Promise<void> {
  await waitFor(`${what} to listen on ${port}`, () => isListening(port), ms);
}

/** A nats-server the test owns: its URL, its store, and a way to kill/restart it. */
export interface OwnNats {
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  kill(signal?: NodeJS.Signals): Promise<void>;
  start(): Promise<void>;
}

/** Starts a private nats-server with JetStream on a free port (for tests that kill it). */
export async function startNats(storeDir = mkdtempSync(join(tmpdir(), "sy-nats-"))): Promise<OwnNats> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const own: OwnNats = {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    async start() {
      child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir], { stdio: "ignore" });
      children.push(child);
      await waitForPort(port, "nats-server");
    },
    async kill(signal = "SIGKILL") {
      const c = child;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once("exit", r));
      c.kill(signal);
      await exited;
    },
  };
  await own.start();
  return own;
}

let sharedNats: Promise<string> | undefined;

/** The URL of a nats-server with JetStream: the one on 4222, or one started here. */
export function natsUrl(): Promise<string> {
  return (sharedNats ??= (async () => {
    if (process.env.NATS_URL) return process.env.NATS_URL;
    if (await isListening(4222)) return "nats://127.0.0.1:4222";
    return (await startNats()).url;
  })());
}

let sharedPg: Promise<string> | undefined;

/** The URL of a PostgreSQL server (trust auth): the one on 5432, or one started here. */
export function postgresUrl(): Promise<string> {
  return (sharedPg ??= (async () => {
    if (process.env.TEST_DATABASE_URL) return process.env.TEST_DATABASE_URL;
    if (await isListening(5432)) return "postgres://postgres@127.0.0.1:5432/postgres";
    return startPostgres();
  })());
}

/** PostgreSQL's server binaries, a fresh data folder owned by the user the server runs as, and a runner that runs as that user. */
function postgresTools(folderPrefix: string): { bin: string; dir: string; run: (cmd: string, args: string[]) => [string, string[]] } {
  const versions = existsSync("/usr/lib/postgresql") ? readdirSync("/usr/lib/postgresql").sort() : [];
  const bin = versions.length ? `/usr/lib/postgresql/${versions.at(-1)}/bin` : undefined;
  if (!bin) throw new Error("no PostgreSQL server binaries found: apt-get install postgresql (or start one on 5432)");
  const dir = mkdtempSync(join(tmpdir(), folderPrefix));
  // As root, the server must run as "postgres" (it refuses root), owning its folder.
  const asPostgres = process.getuid?.() === 0;
  if (asPostgres) chownSync(dir, Number(execFileSync("id", ["-u", "postgres"]).toString().trim()), Number(execFileSync("id", ["-g", "postgres"]).toString().trim()));
  const run = (cmd: string, args: string[]) => (asPostgres ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args]) as [string, string[]];
  return { bin, dir, run };
}

async function startPostgres(): Promise<string> {
  const { bin, dir, run } = postgresTools("sy-pg-");
  const port = await freePort();
  execFileSync(...run(`${bin}/initdb`, ["-D", dir, "-A", "trust", "-U", "postgres"]), { stdio: "ignore" });
  const child = spawn(...run(`${bin}/postgres`, ["-D", dir, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1"]), { stdio: "ignore" });
  children.push(child);
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  await waitForPort(port, "postgres");
  return `postgres://postgres@127.0.0.1:${port}/postgres`;
}

/** Creates an empty database for one test file and returns its URL; `drop()` removes it. */
export async function createTestDatabase(prefix = "sy_test"): Promise<{ url: string; drop(): Promise<void> }> {
  const base = await postgresUrl();
  const name = `${prefix}_${randomBytes(5).toString("hex")}`;
  const admin = postgres(base, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`); // name is generated above, never input
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const a = postgres(base, { max: 1, onnotice: () => {} });
      await a.unsafe(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}

/** A PostgreSQL server a test owns: stop it and start it again on the same port and data. */
export interface OwnPostgres {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Fast shutdown (SIGINT): open connections are closed, then the server exits. */
  stop(): Promise<void>;
  /** Starts it again; resolves once it accepts connections. */
  start(): Promise<void>;
}

/** Starts a private PostgreSQL (initdb in a temp dir, trust auth) for tests that stop and restart it. */
export async function startOwnPostgres(): Promise<OwnPostgres> {
  const { bin, dir: dataDir, run } = postgresTools("sy-ownpg-");
  const port = await freePort();
  execFileSync(...run(`${bin}/initdb`, ["-D", dataDir, "-A", "trust", "-U", "postgres"]), { stdio: "ignore" });
  process.once("exit", () => rmSync(dataDir, { recursive: true, force: true }));
  let child: ChildProcess | undefined;
  const own: OwnPostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    async start() {
      child = spawn(...run(`${bin}/postgres`, ["-D", dataDir, "-p", String(port), "-k", dataDir, "-c", "listen_addresses=127.0.0.1"]), { stdio: "ignore" });
      children.push(child);
      await waitForPort(port, "postgres");
      // Listening is not yet accepting: wait until a query succeeds.
      const until = Date.now() + 15_000;
      for (;;) {
        const probe = postgres(own.url, { max: 1, connect_timeout: 2, onnotice: () => {} });
        try {
          await probe`select 1`;
          return;
        } catch (err) {
          if (Date.now() > until) throw new Error(`postgres on ${port} did not accept queries: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 100));
        } finally {
          await probe.end({ timeout: 1 });
        }
      }
    },
    async stop() {
      const c = child;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once("exit", r));
      // runuser does not forward signals: signal the postmaster (its pid heads postmaster.pid). SIGINT = fast shutdown.
      const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n", 1)[0]);
      process.kill(pid, "SIGINT");
      await exited;
      while (await isListening(port)) await new Promise((r) => setTimeout(r, 50));
    },
  };
  await own.start();
  return own;
}

/** A streaming-replication standby of an OwnPostgres, promotable to primary. */
export interface OwnStandby extends OwnPostgres {
  /** Promotes it (pg_promote) and resolves once it accepts writes. */
  promote(): Promise<void>;
}

/**
 * Starts a hot standby of `primary` on a free port: `pg_basebackup -R` from
 * the primary into a temp folder (removed at exit), then postgres on it.
 * The primary's default pg_hba (initdb -A trust) allows the replication
 * connection from 127.0.0.1.
 */
export async function startOwnStandby(primary: OwnPostgres): Promise<OwnStandby> {
  const { bin, dir: dataDir, run } = postgresTools("sy-standby-");
  const port = await freePort();
  execFileSync(...run(`${bin}/pg_basebackup`, ["-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres", "-D", dataDir, "-R", "-X", "stream"]), { stdio: "ignore" });
  process.once("exit", () => rmSync(dataDir, { recursive: true, force: true }));
  let child: ChildProcess | undefined;
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const query = async <T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> => {
    const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      return await fn(sql);
    } finally {
      await sql.end({ timeout: 1 });
    }
  };
  const standby: OwnStandby = {
    url,
    port,
    dataDir,
    async start() {
      child = spawn(...run(`${bin}/postgres`, ["-D", dataDir, "-p", String(port), "-k", dataDir, "-c", "listen_addresses=127.0.0.1"]), { stdio: "ignore" });
      children.push(child);
      await waitForPort(port, "postgres standby");
      const until = Date.now() + 15_000;
      for (;;) {
        try {
          await query((sql) => sql`select 1`);
          return;
        } catch (err) {
          if (Date.now() > until) throw new Error(`standby on ${port} did not accept queries: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    async stop() {
      const c = child;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once("exit", r));
      const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n", 1)[0]);
      process.kill(pid, "SIGINT");
      await exited;
    },
    async promote() {
      await query((sql) => sql`select pg_promote(true, 30)`);
      const until = Date.now() + 30_000;
      while ((await query((sql) => sql`select pg_is_in_recovery() as r`))[0]!.r) {
        if (Date.now() > until) throw new Error("the standby did not leave recovery within 30 s");
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
  await standby.start();
  return standby;
}
