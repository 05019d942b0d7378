/**
 * Long-lived HTTP/2 (h2c) connections to one target, spread over every
 * address its name resolves to.
 *
 * A Kubernetes headless service resolves to one address per pod, so a
 * client that opened one connection to "the name" would send every call to
 * one pod. The pool keeps one session per resolved address and hands them out
 * round robin; an address that refuses or drops its connection is skipped for
 * a backoff that doubles up to `maxBackoffMs`, and the name is resolved again
 * whenever a session is lost and at least every `resolveEveryMs`, so pods
 * that come and go are followed.
 *
 * Idle sessions are unref'd (they never keep a process alive); a session with
 * a call in flight is ref'd. Keepalive pings detect a peer that vanished
 * without closing the connection (a killed node): an unanswered ping closes
 * the session and its calls fail UNAVAILABLE.
 */
import { lookup } from "node:dns/promises";
import http2 from "node:http2";
import { isIP } from "node:net";

/** Options of a session pool. */
export interface SessionPoolOptions {
  /** `http://host:port`. */
  readonly baseUrl: string;
  /** Milliseconds between keepalive pings on a session (default 30000). */
  readonly keepaliveMs?: number;
  /** Milliseconds a ping may take before the session is closed (default 10000). */
  readonly keepaliveTimeoutMs?: number;
  /** Re-resolve the name at least this often, in ms (default 30000). */
  readonly resolveEveryMs?: number;
  /** Longest wait before an address that failed is tried again, in ms (default 5000). */
  readonly maxBackoffMs?: number;
  /** The addresses a host name stands for (default: every address DNS gives). */
  readonly resolve?: (hostname: string) => Promise<string[]>;
}

async function resolveByDns(hostname: string): Promise<string[]> {
  return (await lookup(hostname, { all: true })).map((a) => a.address);
}

/** A pool of sessions to one target. */
export interface SessionPool {
  /** A connected session, or undefined when none is connected yet (then call `connect`). */
  ready(): http2.ClientHttp2Session | undefined;
  /** Resolves with a connected session; rejects with the last connection error when no address answers. */
  connect(): Promise<http2.ClientHttp2Session>;
  /** Counts a call on `session` (keeps the process alive while any runs); returns the function ending it. */
  track(session: http2.ClientHttp2Session): () => void;
  /** Closes every session; calls in progress fail. */
  close(): void;
}

interface Address {
  readonly host: string;
  session?: http2.ClientHttp2Session;
  connected: boolean;
  /** Calls in flight on `session`. */
  active: number;
  failures: number;
  retryAt: number;
}

/** Creates a pool (see the module comment); nothing connects until the first call. */
export function createSessionPool(options: SessionPoolOptions): SessionPool {
  const url = new URL(options.baseUrl);
  if (url.protocol !== "http:") throw new Error(`${options.baseUrl}: only cleartext h2c (http://) is supported for internal calls`);
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = url.port || "80";
  const keepaliveMs = options.keepaliveMs ?? 30_000;
  const keepaliveTimeoutMs = options.keepaliveTimeoutMs ?? 10_000;
  const resolveEveryMs = options.resolveEveryMs ?? 30_000;
  const maxBackoffMs = options.maxBackoffMs ?? 5_000;
  const resolveHost = options.resolve ?? resolveByDns;

  let addresses: Address[] = [];
  const addressOf = new WeakMap<http2.ClientHttp2Session, Address>();
  let resolvedAt = -Infinity;
  let resolving: Promise<void> | undefined;
  let next = 0;
  let closed = false;

  async function resolve(): Promise<void> {
    const hosts = isIP(hostname) ? [hostname] : await resolveHost(hostname);
    resolvedAt = Date.now();
    const kept = addresses.filter((a) => hosts.includes(a.host));
    for (const gone of addresses) if (!kept.includes(gone)) gone.session?.close();
    const added = hosts.filter((h) => !kept.some((a) => a.host === h)).map((host): Address => ({ host, connected: false, active: 0, failures: 0, retryAt: 0 }));
    addresses = [...kept, ...added];
  }

  function resolveSoon(): Promise<void> {
    resolving ??= resolve().finally(() => (resolving = undefined));
    return resolving;
  }

  function open(address: Address): http2.ClientHttp2Session {
    const authority = isIP(address.host) === 6 ? `[${address.host}]` : address.host;
    const session = http2.connect(`http://${authority}:${port}`);
    address.session = session;
    address.connected = false;
    addressOf.set(session, address);
    session.unref();
    const keepalive = setInterval(() => ping(session), keepaliveMs).unref();
    session.once("connect", () => {
      address.connected = true;
      address.failures = 0;
    });
    session.on("error", () => undefined); // each stream reports its own failure; "close" below cleans up
    session.once("close", () => {
      clearInterval(keepalive);
      if (address.session !== session) return;
      if (!address.connected) {
        address.failures++;
        address.retryAt = Date.now() + Math.min(maxBackoffMs, 100 * 2 ** (address.failures - 1));
      }
      address.session = undefined;
      address.connected = false;
      address.active = 0;
      if (!closed) void resolveSoon().catch(() => undefined);
    });
    session.once("goaway", () => {
      // The server is leaving: new calls go elsewhere, calls in progress finish.
      if (address.session === session) {
        address.session = undefined;
        address.connected = false;
        address.active = 0;
      }
    });
    return session;
  }

  function ping(session: http2.ClientHttp2Session): void {
    if (session.closed || session.destroyed || !session.socket) return;
    const timer = setTimeout(() => session.destroy(new Error("keepalive ping unanswered")), keepaliveTimeoutMs).unref();
    const sent = session.ping((err) => {
      clearTimeout(timer);
      if (err) session.destroy(err);
    });
    if (!sent) clearTimeout(timer);
  }

  function ready(): http2.ClientHttp2Session | undefined {
    if (Date.now() - resolvedAt > resolveEveryMs) void resolveSoon().catch(() => undefined);
    const n = addresses.length;
    let found: http2.ClientHttp2Session | undefined;
    for (let i = 0; i < n; i++) {
      const address = addresses[(next + i) % n]!;
      if (address.session === undefined) {
        // Lost earlier (a pod restarting, a dropped connection): reconnect in
        // the background, at the pace of its backoff, so traffic spreads again.
        if (address.retryAt <= Date.now()) open(address);
      } else if (found === undefined && address.connected) {
        found = address.session;
        next = (next + i + 1) % n;
      }
    }
    return found;
  }

  let connecting: Promise<http2.ClientHttp2Session> | undefined;

  /** One attempt at a time, however many calls wait on it. */
  function connect(): Promise<http2.ClientHttp2Session> {
    connecting ??= connectAny().finally(() => (connecting = undefined));
    return connecting;
  }

  async function connectAny(): Promise<http2.ClientHttp2Session> {
    if (closed) throw new Error("the connection pool is closed");
    if (addresses.length === 0 || Date.now() - resolvedAt > resolveEveryMs) await resolveSoon();
    const now = Date.now();
    const candidates = addresses.filter((a) => a.retryAt <= now || a.session !== undefined);
    const tried = candidates.length > 0 ? candidates : addresses;
    if (tried.length === 0) throw new Error(`${hostname} resolved to no address`);
    const sessions = tried.map((a) => a.session ?? open(a));
    return new Promise((resolve, reject) => {
      let pending = sessions.length;
      let lastError: Error | undefined;
      for (const session of sessions) {
        if (!session.connecting && !session.closed && !session.destroyed) return resolve(session);
        const onConnect = () => {
          session.off("close", onClose);
          resolve(session);
        };
        const onClose = () => {
          session.off("connect", onConnect);
          if (--pending === 0) reject(lastError ?? new Error(`no address of ${hostname}:${port} accepted a connection`));
        };
        session.once("error", (err: Error) => (lastError = err));
        session.once("connect", onConnect);
        session.once("close", onClose);
      }
    });
  }

  function track(session: http2.ClientHttp2Session): () => void {
    const address = addressOf.get(session);
    if (address === undefined || address.session !== session) return () => undefined;
    if (address.active++ === 0) session.ref();
    return () => {
      if (address.session === session && --address.active === 0) session.unref();
    };
  }

  function close(): void {
    closed = true;
    for (const a of addresses) a.session?.destroy();
    addresses = [];
  }

  return { ready, connect, track, close };
}
