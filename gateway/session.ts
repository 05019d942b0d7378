/**
 * One device WebSocket: decoding frames, the conversation rules (hello first,
 * directions, rate), the credential's expiry and reauthentication, and a
 * bounded send queue. What a frame means for presence, calls and
 * notifications is the hub's business (hub.ts).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import type { WebSocket } from "ws";
import {
  DeviceFrameSchema,
  HelloSchema,
  ToolResultSchema,
  type DeviceFrame,
  type Hello,
  type ToolResult,
  type Welcome,
} from "../gen/switchyard/device/v1/device_frame_pb.js";
import { findViolation, type Logger, type Principal } from "../platform/index.js";
import type { VerifyAccessToken } from "./auth.js";
import { decodeFrame, encodeFrame, PROTO_PROTOCOL, type FrameProtocol } from "./codec.js";
import type { DeadlineHandle } from "./deadlines.js";
import { peekToolResult, type RelayedCall } from "./wire.js";

/** A call delivered to this connection and not yet answered. */
export interface Inflight {
  readonly rc: RelayedCall;
  readonly deadline: DeadlineHandle;
}

/** What a session asks of the hub. */
export interface SessionHost {
  readonly log: Logger;
  readonly verify: VerifyAccessToken;
  readonly framesPerSecond: number;
  readonly maxSendBufferBytes: number;
  /** Registers the device (presence, notifications) and sends welcome; fatal errors close the session. */
  hello(s: DeviceSession, hello: Hello): Promise<void>;
  /** A tool_result (its encoding) for a call this session has in flight. */
  toolResult(s: DeviceSession, inflight: Inflight, toolResult: Uint8Array): void;
  /** The socket closed (for whatever reason); runs once. */
  closed(s: DeviceSession): void;
}

const helloTimeoutMs = 10_000;

/** One device connection. */
export class DeviceSession {
  readonly id = randomBytes(12).toString("base64url");
  readonly openedAt = Date.now();
  lastSeen = Date.now();
  deviceId = "";
  helloReceived = false;
  /** In the presence bucket (to be removed on close). */
  registered = false;
  /** Welcome sent: calls may be delivered. */
  ready = false;
  closed = false;
  welcome: Welcome | undefined;
  readonly inflight = new Map<string, Inflight>();
  /** Calls that arrived between presence registration and welcome. */
  readonly early: RelayedCall[] = [];
  private tokens: number;
  private refilledAt = Date.now();
  private authTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly ws: WebSocket,
    readonly protocol: FrameProtocol,
    public principal: Principal,
    private readonly host: SessionHost,
  ) {
    this.tokens = host.framesPerSecond * 2;
    this.armExpiry();
    ws.on("message", (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on("ping", () => {
      if (this.take()) this.lastSeen = Date.now();
    });
    ws.on("pong", () => (this.lastSeen = Date.now()));
    ws.on("error", (err) => host.log.debug({ session: this.id, err: err.message }, "device socket error"));
    ws.on("close", () => this.onClose());
  }

  get userId(): string {
    return this.principal.userId;
  }

  /** Sends a frame; a device whose send queue is over the bound is disconnected (false). */
  send(frame: DeviceFrame): boolean {
    if (this.closed) return false;
    return this.sendEncoded(encodeFrame(this.protocol, frame));
  }

  /** Sends an already encoded binary DeviceFrame (decoded first for a JSON connection). */
  sendFrameBytes(frame: Uint8Array): boolean {
    if (this.closed) return false;
    return this.sendEncoded(this.protocol === PROTO_PROTOCOL ? frame : encodeFrame(this.protocol, fromBinary(DeviceFrameSchema, frame)));
  }

  private sendEncoded(data: Uint8Array | string): boolean {
    if (this.ws.bufferedAmount + (typeof data === "string" ? data.length : data.byteLength) > this.host.maxSendBufferBytes) {
      this.host.log.warn({ session: this.id, queued: this.ws.bufferedAmount }, "device too slow: send queue full; disconnecting");
      this.terminate();
      return false;
    }
    this.ws.send(data);
    return true;
  }

  /** Sends a non-fatal error frame. */
  error(code: Code, message: string, callId = ""): void {
    this.send(create(DeviceFrameSchema, { frame: { case: "error", value: { code, message, callId, fatal: false } } }));
  }

  /** Sends a fatal error frame, then closes with status 4000 + code. */
  fatal(code: Code, message: string): void {
    if (this.closed) return;
    this.send(create(DeviceFrameSchema, { frame: { case: "error", value: { code, message, fatal: true } } }));
    if (this.closed) return;
    this.ws.close(4000 + code, message.slice(0, 120));
    this.onClose(); // stop routing to it now, not when the close handshake ends
  }

  /** Drops the connection without a goodbye (dead or too slow peer). */
  terminate(): void {
    this.ws.terminate();
    this.onClose();
  }

  /**
   * Periodic check (from the hub's sweep): hello deadline, dead peer,
   * keepalive ping. After `stalled` (this process did not run for a while)
   * the device's silence is not its own: it is given a fresh interval.
   */
  sweep(now: number, heartbeatMs: number, stalled = false): void {
    if (this.closed) return;
    if (stalled) this.lastSeen = Math.max(this.lastSeen, now);
    if (!this.helloReceived && now - this.openedAt > helloTimeoutMs) {
      return this.fatal(Code.FailedPrecondition, "no hello within 10 seconds");
    }
    if (now - this.lastSeen > 2 * heartbeatMs) {
      this.host.log.info({ session: this.id }, "device silent for two heartbeat intervals; dropping");
      return this.terminate();
    }
    try {
      this.ws.ping();
    } catch {
      this.terminate();
    }
  }

  private armExpiry(): void {
    clearTimeout(this.authTimer);
    const ms = this.principal.expiresAt - Date.now();
    const expire = () => this.fatal(Code.Unauthenticated, "the credential expired: reauthenticate before auth_expire_time or reconnect");
    if (ms <= 0) return void setImmediate(expire);
    // Timers cap at ~24.8 days; a longer credential is re-checked then.
    this.authTimer = setTimeout(() => (Date.now() >= this.principal.expiresAt ? expire() : this.armExpiry()), Math.min(ms, 2 ** 31 - 1));
    this.authTimer.unref();
  }

  /** Token bucket over the frames the device sends unasked (pings included). */
  private take(): boolean {
    const now = Date.now();
    const rate = this.host.framesPerSecond;
    this.tokens = Math.min(rate * 2, this.tokens + ((now - this.refilledAt) * rate) / 1000);
    this.refilledAt = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    this.fatal(Code.ResourceExhausted, `more than ${rate} frames per second`);
    return false;
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.closed) return;
    this.lastSeen = Date.now();
    if (isBinary && this.protocol === PROTO_PROTOCOL && this.helloReceived) {
      // The hot path: a result for a call in flight, relayed as the device encoded it.
      let peeked;
      try {
        peeked = peekToolResult(data);
      } catch {
        /* malformed: the full decode below says so */
      }
      const inflight = peeked?.kind === "result" ? this.inflight.get(peeked.callId) : undefined;
      if (inflight !== undefined) return this.host.toolResult(this, inflight, peeked!.toolResult);
    }
    let frame: DeviceFrame;
    try {
      frame = decodeFrame(this.protocol, data, isBinary);
    } catch (err) {
      return this.fatal(Code.InvalidArgument, `undecodable frame: ${(err as Error).message}`);
    }
    const f = frame.frame;
    // Answers to calls the gateway sent are paced by the gateway; every other frame is rate-limited.
    if (!(f.case === "toolResult" && this.inflight.has(f.value.callId)) && !this.take()) return;
    if (!this.helloReceived && f.case !== "hello") return this.fatal(Code.FailedPrecondition, "the first frame must be hello");
    switch (f.case) {
      case "hello":
        return this.onHello(f.value);
      case "toolResult":
        return this.onToolResult(f.value);
      case "ping":
        this.send(create(DeviceFrameSchema, { frame: { case: "pong", value: { nonce: f.value.nonce } } }));
        return;
      case "reauthenticate":
        return void this.onReauthenticate(f.value.accessToken);
      case "error":
        this.host.log.info({ session: this.id, code: f.value.code, message: f.value.message.slice(0, 200) }, "device reported an error");
        if (f.value.fatal) this.terminate();
        return;
      case undefined:
        return this.error(Code.InvalidArgument, "frame has no variant set");
      default:
        return this.error(Code.InvalidArgument, `${f.case} frames go from the gateway to the device`);
    }
  }

  private onHello(hello: Hello): void {
    if (this.helloReceived) return this.error(Code.InvalidArgument, "hello was already received on this connection");
    this.helloReceived = true;
    const violation = findViolation(HelloSchema, hello);
    if (violation !== undefined) return this.fatal(Code.InvalidArgument, `hello.${violation}`);
    const names = new Set(hello.tools.map((t) => t.name));
    if (names.size !== hello.tools.length) return this.fatal(Code.InvalidArgument, "hello.tools: names must be distinct");
    this.deviceId = hello.deviceId;
    this.host.hello(this, hello).catch((err: unknown) => {
      const e = ConnectError.from(err);
      this.fatal(e.code, e.rawMessage);
    });
  }

  private onToolResult(r: ToolResult): void {
    const violation = findViolation(ToolResultSchema, r);
    if (violation !== undefined) return this.error(Code.InvalidArgument, `tool_result.${violation}`, r.callId.slice(0, 64));
    const inflight = this.inflight.get(r.callId);
    if (inflight === undefined) return this.error(Code.NotFound, "no pending call with this call_id on this connection", r.callId);
    if (r.outcome.case === undefined) return this.error(Code.InvalidArgument, "tool_result: exactly one of result or error must be set", r.callId);
    this.host.toolResult(this, inflight, toBinary(ToolResultSchema, r));
  }

  private async onReauthenticate(token: string): Promise<void> {
    let p: Principal;
    try {
      p = await this.host.verify(token);
    } catch (err) {
      return this.fatal(Code.Unauthenticated, `reauthenticate refused: ${ConnectError.from(err).rawMessage}`);
    }
    if (this.closed) return;
    if (p.userId !== this.principal.userId) return this.fatal(Code.Unauthenticated, "reauthenticate refused: the token names another user");
    this.principal = p;
    this.armExpiry();
    if (this.welcome !== undefined) {
      this.welcome.authExpireTime = timestampFromMs(p.expiresAt);
      this.send(create(DeviceFrameSchema, { frame: { case: "welcome", value: this.welcome } }));
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.authTimer);
    this.host.closed(this);
  }
}
