/**
 * The process's NATS connection: reconnects forever with capped exponential
 * backoff, pings every 2 s (a server that stops answering is noticed within
 * about 6 s; one that dies is noticed at once, its socket closes), and keeps
 * a "connected" flag for `/readyz` and for RPCs that need NATS, which answer
 * UNAVAILABLE at once while it is down instead of waiting on a buffer.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import type { Logger } from "../log.js";
import { natsServers } from "./vars.js";

/** Connection tuning; the defaults suit production. */
export interface NatsOptions {
  /** Client name shown by the server (`nats server report connections`). */
  readonly name?: string;
  /** Milliseconds between pings (default 2000). */
  readonly pingIntervalMs?: number;
  /** Unanswered pings before the connection counts as dead (default 2). */
  readonly maxPingOut?: number;
  /** Longest wait between reconnect attempts (default 2000 ms). */
  readonly maxReconnectDelayMs?: number;
}

const state = new WeakMap<NatsConnection, { connected: boolean }>();

/**
 * Connects to `url` (one NATS URL, or several comma-separated: all are tried
 * at start and on reconnect, and the servers a cluster announces are added),
 * waiting (and retrying forever, logging every few
 * attempts) until the first connection succeeds. Rejects only for a bad URL
 * or when the server refuses the client (authorization).
 */
export async function connectNats(url: string, log: Logger, options: NatsOptions = {}): Promise<NatsConnection> {
  const maxDelay = options.maxReconnectDelayMs ?? 2000;
  let attempt = 0;
  const nc = await connect({
    servers: natsServers(url),
    name: options.name ?? "switchyard",
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    pingInterval: options.pingIntervalMs ?? 2000,
    maxPingOut: options.maxPingOut ?? 2,
    timeout: 5000,
    // Capped exponential backoff with jitter: 100 ms, 200 ms, ... up to maxDelay.
    reconnectDelayHandler: () => {
      attempt++;
      if (attempt % 10 === 0) log.warn({ url, attempt }, "still trying to reach NATS");
      const base = Math.min(maxDelay, 100 * 2 ** Math.min(attempt, 10));
      return base / 2 + Math.random() * (base / 2);
    },
  });
  coalesceWrites(nc, log);
  const s = { connected: true };
  state.set(nc, s);
  void (async () => {
    for await (const status of nc.status()) {
      switch (status.type) {
        case "disconnect":
        case "staleConnection":
          if (s.connected) log.warn({ url }, "NATS connection lost; reconnecting");
          s.connected = false;
          break;
        case "reconnect":
          attempt = 0;
          s.connected = true;
          log.info({ url }, "NATS connection restored");
          break;
        case "close":
          s.connected = false;
          break;
      }
    }
  })().catch(() => undefined);
  void nc.closed().then(() => (s.connected = false));
  return nc;
}

/** The parts of nats.js's protocol handler that `coalesceWrites` replaces. */
interface ProtocolInternals {
  outbound: { length(): number; size(): number; fill(buf: Uint8Array, ...payloads: Uint8Array[]): void };
  pendingLimit: number;
  flushPending(): void;
  sendCommand(cmd: string | Uint8Array, ...payloads: Uint8Array[]): void;
}

/**
 * Makes the client write what it has queued once per event-loop turn
 * instead of once per microtask checkpoint. nats.js flushes in a microtask,
 * and Node runs microtasks after every callback from native code, so a
 * server handling many RPCs that arrived in one socket read (HTTP/2 frames)
 * wrote one small packet per publish: measured in bench/toolcall, the
 * service relaying tool calls and nats-server each spent several times the CPU
 * per call of the same code called in one tick. `setImmediate` runs after
 * the turn's I/O callbacks, so their publishes leave in one write; a lone
 * publish waits no more than the rest of the turn. Left as is (with a
 * warning) if nats.js's internals are not the shape this expects.
 */
function coalesceWrites(nc: NatsConnection, log: Logger): void {
  const ph = (nc as unknown as { protocol?: Partial<ProtocolInternals> }).protocol;
  if (
    ph === undefined ||
    typeof ph.sendCommand !== "function" ||
    typeof ph.flushPending !== "function" ||
    typeof ph.outbound?.fill !== "function" ||
    typeof ph.pendingLimit !== "number"
  ) {
    log.warn("nats.js internals changed: NATS writes are not coalesced per event-loop turn");
    return;
  }
  const p = ph as ProtocolInternals;
  const encoder = new TextEncoder();
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    p.flushPending();
  };
  p.sendCommand = (cmd, ...payloads) => {
    p.outbound.fill(typeof cmd === "string" ? encoder.encode(cmd) : cmd, ...payloads);
    if (p.outbound.size() >= p.pendingLimit) p.flushPending();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
}

/** Whether `nc` is connected now (false while reconnecting or once closed). */
export function isNatsConnected(nc: NatsConnection): boolean {
  const s = state.get(nc);
  return s === undefined ? !nc.isClosed() : s.connected;
}

/**
 * Throws ConnectError UNAVAILABLE when `nc` is not connected now, so an RPC
 * that needs NATS fails at once (the client retries) rather than waiting for
 * a reconnect or a timeout.
 */
export function requireNats(nc: NatsConnection): void {
  if (!isNatsConnected(nc)) throw new ConnectError("the message bus is unavailable; retry shortly", Code.Unavailable);
}
