/**
 * What the gateway tests share: a signing key with its JWKS served over HTTP
 * (the gateways fetch it through AUTH_JWKS_URL, as in production when auth
 * runs elsewhere), gateway processes started with `SERVICES=gateway`, RPC
 * clients with a token, and a device written here with `ws`.
 */
import { create, fromBinary, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocket } from "ws";
import {
  DeviceFrameSchema,
  type DeviceFrame,
  type ToolCall,
} from "../../gen/switchyard/device/v1/device_frame_pb.js";
import { DeviceService } from "../../gen/switchyard/device/v1/device_pb.js";
import { NotificationService } from "../../gen/switchyard/notify/v1/notify_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { natsUrl } from "../support/infra.js";
import { spawnPlatform } from "../support/spawn.js";
import { waitFor } from "../support/wait.js";

const ISS = "switchyard-auth";
const AUD = "switchyard";

/** A signing key whose JWKS is served on a local port. */
export interface TestKeys {
  readonly jwksUrl: string;
  /** Signs an access token (ES256, typ at+jwt) for `sub`. */
  mint(sub: string, opts?: { roles?: string[]; ttlS?: number; tier?: string }): Promise<string>;
  close(): Promise<void>;
}

/** Generates a key pair and serves its JWKS. */
export async function startTestKeys(): Promise<TestKeys> {
  const kid = `k${randomBytes(4).toString("hex")}`;
  const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    jwksUrl: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    mint: (sub, opts = {}) => sign(privateKey, kid, sub, opts),
    close: () => new Promise((r) => server.close(() => r())),
  };
}

function sign(key: CryptoKey, kid: string, sub: string, opts: { roles?: string[]; ttlS?: number; tier?: string }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ tier: opts.tier ?? "pro", roles: opts.roles ?? [] })
    .setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" })
    .setIssuer(ISS)
    .setAudience(AUD)
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + (opts.ttlS ?? 600))
    .sign(key);
}

/** A gateway process. */
export interface GatewayProcess {
  readonly port: number;
  readonly instanceId: string;
  readonly baseUrl: string;
  readonly child: ChildProcess;
  /** Output so far (for failure messages). */
  output(): string;
  /** Kills with `signal` and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `node --import tsx app/main.ts` with SERVICES=gateway; resolves once /readyz says ready. */
export async function startGateway(env: Record<string, string>): Promise<GatewayProcess> {
  const instanceId = env.INSTANCE_ID ?? `gw-${randomBytes(4).toString("hex")}`;
  const gw = await spawnPlatform({
    env: { SERVICES: "gateway", HOST: "127.0.0.1", LOG_LEVEL: "warn", INSTANCE_ID: instanceId, SHUTDOWN_GRACE_MS: "1000", ...env },
    timeoutMs: 120_000, // a bound for a start that hangs; a loaded machine starts slowly, not wrongly
  });
  process.once("exit", () => gw.child.kill("SIGKILL"));
  return { port: gw.port, instanceId, baseUrl: gw.baseUrl, child: gw.child, output: gw.output, kill: gw.stop };
}

/** Connect clients of DeviceService and NotificationService sending `token`. */
export function rpcClients(baseUrl: string, token: string): { devices: Client<typeof DeviceService>; notify: Client<typeof NotificationService> } {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl, interceptors: [auth] });
  return { devices: createClient(DeviceService, transport), notify: createClient(NotificationService, transport) };
}

/** How a test device answers tool calls. */
export type ToolHandler = (call: ToolCall, device: TestDevice) => JsonObject | undefined | Promise<JsonObject | undefined>;

/** Options of a test device. */
export interface DeviceOptions {
  readonly token?: string;
  readonly ticket?: string;
  readonly deviceId?: string;
  readonly tools?: string[];
  readonly protocol?: string;
  readonly origin?: string;
  readonly lastNotificationSequence?: bigint;
  /** Answers calls; undefined result = do not answer (hold the call). */
  readonly onCall?: ToolHandler;
  /** Skip sending hello. */
  readonly noHello?: boolean;
}

/** A device connected over `ws`. */
export interface TestDevice {
  readonly ws: WebSocket;
  readonly frames: DeviceFrame[];
  readonly calls: ToolCall[];
  /** Sends a frame (binary protobuf). */
  send(frame: DeviceFrame | Uint8Array | string): void;
  /** Resolves with the first received frame matching `pred` (past or future), or rejects after `ms`. */
  waitFor(pred: (f: DeviceFrame) => boolean, ms?: number, what?: string): Promise<DeviceFrame>;
  /** Resolves when the socket is closed, with its close code. */
  readonly closed: Promise<number>;
  /** Answers a call. */
  answer(callId: string, result: JsonObject): void;
}

/** The outcome of an upgrade that failed. */
export interface Refused {
  readonly status: number;
  readonly body: string;
}

/** Opens a device connection; resolves after welcome (or at once with noHello); rejects with Refused on an HTTP refusal. */
export async function connectDevice(port: number, o: DeviceOptions = {}): Promise<TestDevice> {
  const url = `ws://127.0.0.1:${port}/ws/device${o.ticket ? `?ticket=${encodeURIComponent(o.ticket)}` : ""}`;
  const headers: Record<string, string> = {};
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (o.origin) headers.origin = o.origin;
  const ws = new WebSocket(url, [o.protocol ?? "switchyard.device.v1+proto"], { headers, maxPayload: 64 * 1024 * 1024 });
  const frames: DeviceFrame[] = [];
  const calls: ToolCall[] = [];
  const waiters = new Set<{ pred: (f: DeviceFrame) => boolean; resolve: (f: DeviceFrame) => void }>();
  const json = ws.protocol === "switchyard.device.v1+json" || o.protocol === "switchyard.device.v1+json";
  let device!: TestDevice;
  const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => reject(Object.assign(new Error(`refused ${res.statusCode}: ${body}`), { status: res.statusCode, body })));
    });
    ws.once("error", reject);
  });
  ws.on("error", () => {});
  ws.on("message", (data: Buffer, isBinary) => {
    const f = isBinary ? fromBinary(DeviceFrameSchema, data) : (JSON.parse(data.toString()) as never);
    frames.push(f);
    for (const w of [...waiters]) if (w.pred(f)) (waiters.delete(w), w.resolve(f));
    if (isBinary && f.frame.case === "toolCall") {
      const call = f.frame.value;
      calls.push(call);
      if (o.onCall) {
        void Promise.resolve(o.onCall(call, device)).then((r) => r !== undefined && device.answer(call.callId, r));
      }
    }
  });
  device = {
    ws,
    frames,
    calls,
    closed,
    send(frame) {
      ws.send(typeof frame === "string" || frame instanceof Uint8Array ? frame : toBinary(DeviceFrameSchema, frame));
    },
    waitFor(pred, ms = 10_000, what = "a frame") {
      const found = frames.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve: (f: DeviceFrame) => (clearTimeout(t), resolve(f)) };
        const t = setTimeout(() => (waiters.delete(w), reject(new Error(`no ${what} within ${ms} ms; got ${frames.map((f) => f.frame.case).join(",")}`))), ms);
        waiters.add(w);
      });
    },
    answer(callId, result) {
      if (ws.readyState !== WebSocket.OPEN) return;
      device.send(create(DeviceFrameSchema, { frame: { case: "toolResult", value: { callId, outcome: { case: "result", value: result } } } }));
    },
  };
  if (o.noHello || json) return device;
  device.send(
    create(DeviceFrameSchema, {
      frame: {
        case: "hello",
        value: {
          deviceId: o.deviceId ?? `d${randomBytes(4).toString("hex")}`,
          deviceName: "test device",
          tools: (o.tools ?? ["echo"]).map((name) => ({ name })),
          lastNotificationSequence: o.lastNotificationSequence ?? 0n,
        },
      },
    }),
  );
  await Promise.race([
    device.waitFor((f) => f.frame.case === "welcome" || (f.frame.case === "error" && f.frame.value.fatal), 10_000, "welcome"),
    closed.then((code) => Promise.reject(new Error(`closed with ${code} before welcome`))),
  ]);
  return device;
}

/** Waits until `check` returns true: the shared {@link waitFor}, in the argument order these tests use. */
export async function eventually(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  await waitFor(what, check, ms, 25);
}

/** A fresh user id. */
export const newUser = () => `u${randomBytes(6).toString("hex")}`;

/** A fresh NATS prefix, so concurrent test files never share streams. */
export const newPrefix = () => `t${randomBytes(4).toString("hex")}`;

/** Deletes the streams and buckets of a test prefix from the NATS server at `url`. */
export async function dropPrefix(url: string, prefix: string): Promise<void> {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstreamManager } = await import("@nats-io/jetstream");
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const P = prefix.toUpperCase();
    for (const name of [`${P}_TOOLCALLS`, `${P}_TOOLRESULTS`, `${P}_NOTIFY`, `KV_${prefix}_devices`, `KV_${prefix}_gateways`, `KV_${prefix}_tickets`]) {
      await jsm.streams.delete(name).catch(() => false);
    }
  } finally {
    await nc.close();
  }
}

/** What a gateway test file runs against, set up once by {@link startGatewayFixture}. */
export interface GatewayFixture {
  readonly keys: TestKeys;
  /** The NATS URL the gateways use. */
  readonly nats: string;
  /** Their NATS prefix (streams and buckets dropped by close()). */
  readonly prefix: string;
  readonly gateways: GatewayProcess[];
  /** Every device opened through `device`, in order. */
  readonly devices: TestDevice[];
  /** Clients of gateway `i` with a token of the service "agent-runner". */
  service(i?: number): Promise<ReturnType<typeof rpcClients>>;
  /** connectDevice, and the device is closed by close(). */
  device(...args: Parameters<typeof connectDevice>): Promise<TestDevice>;
  /** Closes the devices, kills the gateways, drops the prefix, stops the key server. */
  close(): Promise<void>;
}

/**
 * The gateway tests' one setup: a key server, `count` gateways sharing a
 * fresh NATS prefix on `nats` (default: the shared nats-server), started at
 * once with `env` over the defaults (heartbeat 1 s).
 */
export async function startGatewayFixture(o: { count: number; env?: Record<string, string>; nats?: string }): Promise<GatewayFixture> {
  const keys = await startTestKeys();
  const nats = o.nats ?? (await natsUrl());
  const prefix = newPrefix();
  const env = { NATS_URL: nats, AUTH_JWKS_URL: keys.jwksUrl, GATEWAY_NATS_PREFIX: prefix, GATEWAY_HEARTBEAT_MS: "1000", ...o.env };
  const gateways: GatewayProcess[] = [];
  const devices: TestDevice[] = [];
  const close = async () => {
    for (const d of devices) d.ws.terminate();
    for (const g of gateways) g.child.kill("SIGCONT"); // a test may have stopped one
    await Promise.all(gateways.map((g) => g.kill("SIGKILL")));
    await dropPrefix(nats, prefix).catch(() => undefined); // a test may have killed its own nats-server
    await keys.close();
  };
  try {
    gateways.push(...(await Promise.all(Array.from({ length: o.count }, () => startGateway(env)))));
  } catch (err) {
    await close();
    throw err;
  }
  let serviceToken: Promise<string> | undefined;
  return {
    keys,
    nats,
    prefix,
    gateways,
    devices,
    async service(i = 0) {
      return rpcClients(gateways[i]!.baseUrl, await (serviceToken ??= keys.mint("agent-runner", { roles: ["service"] })));
    },
    async device(...args) {
      const d = await connectDevice(...args);
      devices.push(d);
      return d;
    },
    close,
  };
}

/** How an RPC failed (its code and message); fails the test if it succeeded. */
export async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  return assert.fail("expected the RPC to fail");
}
