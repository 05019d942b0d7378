/**
 * DeviceService: CallTool and CancelToolCall (through calls.ts), ListDevices
 * (a fresh read of presence, dead instances filtered out) and IssueDeviceTicket.
 */
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { CallToolResponseSchema, DeviceSchema, DeviceService, type Device } from "../gen/switchyard/device/v1/device_pb.js";
import { encodedResponse, randomBase64url, register, type ServiceRegistration } from "../platform/index.js";
import { actingUser, isService, principalOf } from "./auth.js";
import type { GatewayBeats } from "./beats.js";
import type { ToolCaller } from "./calls.js";
import { structBytes } from "./codec.js";
import type { PresenceStore } from "./presence.js";
import type { Tickets } from "./tickets.js";
import { encodeCallToolResponse } from "./wire.js";

/** What the service needs. */
export interface DeviceServiceDeps {
  readonly caller: ToolCaller;
  readonly presence: PresenceStore;
  readonly beats: GatewayBeats;
  readonly tickets: Tickets;
}

const defaultTimeoutMs = 30_000;
const maxTimeoutMs = 300_000;
const maxArgumentBytes = 256 * 1024;

/** Encodes a ListDevices page token bound to the user. */
function pageToken(userId: string, after: string): string {
  return Buffer.from(JSON.stringify({ u: userId, a: after })).toString("base64url");
}

function readPageToken(token: string, userId: string): string {
  if (token === "") return "";
  try {
    const v = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { u?: unknown; a?: unknown };
    if (v.u === userId && typeof v.a === "string") return v.a;
  } catch {
    /* fall through */
  }
  throw new ConnectError("page_token: is malformed or came from a call with another user_id", Code.InvalidArgument);
}

/** The DeviceService registration. */
export function deviceService(d: DeviceServiceDeps): ServiceRegistration {
  return register(DeviceService, {
    async callTool(req, ctx) {
      const userId = actingUser(principalOf(ctx), req.userId);
      let timeout = req.timeout === undefined ? 0 : durationMs(req.timeout);
      if (timeout < 0) throw new ConnectError("timeout: must not be negative", Code.InvalidArgument);
      if (timeout > maxTimeoutMs) throw new ConnectError("timeout: must be at most 300 s", Code.InvalidArgument);
      if (timeout === 0) timeout = defaultTimeoutMs;
      const argsBytes = structBytes(req.arguments);
      if (argsBytes.length > maxArgumentBytes) throw new ConnectError(`arguments: must be at most ${maxArgumentBytes} bytes encoded, got ${argsBytes.length}`, Code.InvalidArgument);
      const rpcLeft = ctx.timeoutMs();
      const deadline = Date.now() + Math.min(timeout, rpcLeft ?? timeout);
      if (req.keepRunning && req.callId === "") throw new ConnectError("keep_running: needs a call_id, which a later call uses to get the outcome", Code.InvalidArgument);
      // From the pooled CSPRNG: a randomBytes call per RPC cost more than the rest of the server path.
      const callId = req.callId || randomBase64url(16);
      const o = await d.caller.call(
        { callId, userId, requestedDeviceId: req.deviceId, tool: req.tool, argsBytes, deadline, waitForDevice: req.waitForDevice },
        // keep_running: the call is not bound to this RPC, so a caller that dies does not stop it.
        req.keepRunning ? undefined : ctx.signal,
      );
      if (o.toolResult === undefined) throw new ConnectError("the call ended without an outcome", Code.Internal);
      // The device's outcome goes out as the bytes it sent: decoding it and
      // encoding it again cost more than the rest of the response.
      return encodedResponse(CallToolResponseSchema, encodeCallToolResponse(callId, o.deviceId, o.toolResult));
    },

    async listDevices(req, ctx) {
      const userId = actingUser(principalOf(ctx), req.userId);
      const after = readPageToken(req.pageToken, userId);
      const size = req.pageSize === 0 ? 50 : req.pageSize;
      const byDevice = new Map<string, Device>();
      for (const e of await d.presence.read(userId)) {
        const dev = e.device!;
        const prev = byDevice.get(dev.deviceId);
        if (prev !== undefined && (prev.connectTime?.seconds ?? 0n) >= (dev.connectTime?.seconds ?? 0n)) continue;
        const seen = d.beats.lastBeat(dev.gatewayInstance);
        byDevice.set(dev.deviceId, create(DeviceSchema, { ...dev, lastSeenTime: seen === undefined ? dev.connectTime : timestampFromMs(seen) }));
      }
      const all = [...byDevice.values()].filter((x) => x.deviceId > after).sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1));
      const devices = all.slice(0, size);
      return { devices, nextPageToken: all.length > size ? pageToken(userId, devices.at(-1)!.deviceId) : "" };
    },

    async cancelToolCall(req, ctx) {
      const userId = actingUser(principalOf(ctx), req.userId);
      d.caller.cancel(userId, req.callId, req.reason);
      return {};
    },

    async issueDeviceTicket(_req, ctx) {
      const p = principalOf(ctx);
      if (isService(p)) throw new ConnectError("tickets are for users; a service cannot open a device connection", Code.PermissionDenied);
      const { ticket, expireAt } = await d.tickets.issue(p);
      return { ticket, expireTime: timestampFromMs(expireAt) };
    },
  });
}
