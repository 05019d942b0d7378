/**
 * The embedded PostgreSQL of `npm start` without DATABASE_URL: PGlite (with
 * pgvector) keeping its data under `<dataDir>`, served on a loopback port so
 * the process uses the same `postgres` client as in production.
 *
 * PGlite is one PostgreSQL session. `@electric-sql/pglite-socket` feeds it the
 * messages of all client connections one message at a time, so two
 * connections' extended-protocol exchanges (Parse/Bind/Execute/Sync) can
 * interleave and one connection's Bind can replace another's unnamed portal:
 * measured here, `postgres` with `prepare: false` gets "bind message supplies
 * 2 parameters, but prepared statement requires 0". This server instead runs
 * each connection's messages up to and including its next Sync (or simple
 * Query) as one unit, and while a transaction (or an exchange paused on a
 * Flush) is open runs only the connection that opened it, so every
 * connection sees a session of its own.
 *
 * One process owns a data directory: a lock file names its pid and URL, and
 * another process (`npm run migrate`, `npm run dlq`) finding it alive uses
 * that URL instead of opening the files a second time.
 */
import { PGlite } from "@electric-sql/pglite";
import { vector } from "@electric-sql/pglite-pgvector";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";

/** A running embedded PostgreSQL. */
export interface EmbeddedPostgres {
  /** `postgres://` URL on 127.0.0.1. */
  readonly url: string;
  /** Whether this process owns the data (false: it uses another process's server). */
  readonly owner: boolean;
  /** Stops serving and closes the data directory (no-op when not the owner). */
  stop(): Promise<void>;
}

interface Unit {
  readonly conn: Connection;
  readonly bytes: Uint8Array;
  /** Ends with Flush: the client will go on with the same exchange (its unnamed statement). */
  readonly open: boolean;
}

interface Connection {
  readonly socket: net.Socket;
  closed: boolean;
}

const SSL_REQUEST = 80877103;
const CANCEL_REQUEST = 80877102;
const GSS_REQUEST = 80877104;

/**
 * Starts (or joins) the embedded PostgreSQL whose files live in `dataDir`
 * (created if missing). Rejects when PGlite cannot open the directory.
 */
export async function startEmbeddedPostgres(dataDir: string): Promise<EmbeddedPostgres> {
  mkdirSync(dataDir, { recursive: true });
  const lockFile = join(dataDir, "..", `${dataDir.split("/").filter(Boolean).at(-1) ?? "pg"}.lock.json`);
  const other = await liveOwner(lockFile);
  if (other !== undefined) return { url: other, owner: false, stop: async () => {} };

  const db = await PGlite.create({ dataDir, extensions: { vector } });
  const queue: Unit[] = [];
  let running = false;
  let owner: Connection | undefined; // the connection whose transaction is open

  const pump = async () => {
    if (running) return;
    running = true;
    try {
      for (;;) {
        const index = owner === undefined ? 0 : queue.findIndex((u) => u.conn === owner);
        if (index === -1 || queue.length === 0) break;
        const unit = queue.splice(index, 1)[0]!;
        if (unit.conn.closed) continue;
        await db.runExclusive(() =>
          db.execProtocolRawStream(unit.bytes, {
            onRawData: (data) => {
              if (!unit.conn.closed && data.length > 0) unit.conn.socket.write(Buffer.from(data));
            },
          }),
        );
        owner = db.isInTransaction() || unit.open ? unit.conn : undefined;
      }
    } finally {
      running = false;
    }
  };

  const release = async (conn: Connection) => {
    conn.closed = true;
    for (let i = queue.length - 1; i >= 0; i--) if (queue[i]!.conn === conn) queue.splice(i, 1);
    if (owner === conn) {
      // The client left inside a transaction: roll it back so others can run.
      await db.runExclusive(() => db.exec("ROLLBACK"));
      owner = undefined;
    }
    void pump();
  };

  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    const conn: Connection = { socket, closed: false };
    let pending: Buffer = Buffer.alloc(0);
    let started = false;
    socket.on("data", (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      for (;;) {
        if (!started) {
          if (pending.length < 8) return;
          const len = pending.readInt32BE(0);
          if (pending.length < len) return;
          const code = pending.readInt32BE(4);
          const message = pending.subarray(0, len);
          pending = pending.subarray(len);
          if (code === SSL_REQUEST || code === GSS_REQUEST) {
            socket.write("N"); // no TLS on loopback; the client goes on in clear
            continue;
          }
          if (code === CANCEL_REQUEST) {
            socket.end();
            return;
          }
          started = true;
          queue.push({ conn, bytes: new Uint8Array(message), open: false });
          void pump();
          continue;
        }
        // Cut after the last complete Sync ('S') or Query ('Q'): the unit a client waits on.
        let offset = 0;
        let cut = 0;
        let open = false;
        while (pending.length - offset >= 5) {
          const len = 1 + pending.readInt32BE(offset + 1);
          if (pending.length - offset < len) break;
          const type = pending[offset]!;
          offset += len;
          if (type === 0x53 || type === 0x51 || type === 0x48) {
            cut = offset; // Sync, Query, Flush
            open = type === 0x48;
          }
          if (type === 0x58) {
            socket.end(); // Terminate
            return;
          }
        }
        if (cut === 0) return;
        queue.push({ conn, bytes: new Uint8Array(pending.subarray(0, cut)), open });
        pending = pending.subarray(cut);
        void pump();
        return;
      }
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => void release(conn));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  writeFileSync(lockFile, JSON.stringify({ pid: process.pid, url }));
  const sockets = new Set<net.Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  return {
    url,
    owner: true,
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      while (running) await new Promise((r) => setTimeout(r, 5));
      await db.close();
      rmSync(lockFile, { force: true });
    },
  };
}

/** The URL of the live process that owns the data directory, if one does. */
async function liveOwner(lockFile: string): Promise<string | undefined> {
  let lock: { pid: number; url: string };
  try {
    lock = JSON.parse(readFileSync(lockFile, "utf8")) as { pid: number; url: string };
  } catch {
    return undefined;
  }
  if (lock.pid === process.pid) return undefined;
  try {
    process.kill(lock.pid, 0);
  } catch {
    return undefined; // stale: that process is gone
  }
  const port = Number(new URL(lock.url).port);
  const reachable = await new Promise<boolean>((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  return reachable ? lock.url : undefined;
}
