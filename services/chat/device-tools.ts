/**
 * The tools of a user's connected devices, through the gateway's generated
 * DeviceService client only: ListDevices for what they offer (Hello.tools),
 * CallTool to run one with a call id, the arguments and a timeout. The
 * gateway's call-id dedupe makes a repeated call return the first outcome,
 * and keep_running lets a call outlive this instance: the instance taking a
 * turn over calls again with the same id and gets the real outcome.
 * CancelToolCall stops a call when its turn ends without a hand-over.
 * Listings are cached per user (listing-cache.ts): the gateway's
 * DevicesChanged event drops a user's entry as soon as a device connects or
 * goes (user-events.ts), and a call no device could take drops it too.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { DeviceService, ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import { createListingCache, failureTtlOfRpcError } from "./listing-cache.js";
import { handsOver, type AgentTool, type ToolOutcome, type ToolSource } from "./tools.js";

/** Devices listed per page; a user rarely has more than a few. */
const pageSize = 100;
/** Longest a listing may take (it is shared by the turns waiting for it, so no one turn's signal bounds it). */
const listTimeoutMs = 10_000;

/** What the device tool source needs. */
export interface DeviceToolSourceOptions {
  /** How long a user's listing is reused, ms (0 = ask every turn). DevicesChanged events drop it sooner. */
  readonly cacheTtlMs: number;
}

/** A device tool source whose per-user listing can be dropped when the user's devices change. */
export interface DeviceToolSource extends ToolSource {
  /** Forgets `userId`'s cached listing: the next `list` asks the gateway. */
  invalidate(userId: string): void;
}

/** The tools the user's connected devices declare, by name; the most recently connected device's declaration wins, as CallTool picks that device. */
async function fetchDeviceTools(devices: Client<typeof DeviceService>, userId: string): Promise<AgentTool[]> {
  const byName = new Map<string, AgentTool>();
  let pageToken = "";
  do {
    const page = await devices.listDevices({ userId, pageSize, pageToken }, { timeoutMs: listTimeoutMs });
    const newestFirst = [...page.devices].sort((a, b) => Number((b.connectTime?.seconds ?? 0n) - (a.connectTime?.seconds ?? 0n)));
    for (const d of newestFirst) {
      for (const t of d.tools) {
        if (byName.has(t.name)) continue;
        byName.set(t.name, {
          name: t.name,
          description: t.description,
          inputSchema: t.parametersSchema !== undefined && Object.keys(t.parametersSchema).length > 0 ? t.parametersSchema : { type: "object" },
          annotations: { readOnlyHint: t.annotations?.readOnlyHint, destructiveHint: t.annotations?.destructiveHint },
          origin: "device",
        });
      }
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The device tool source over a DeviceService client that sends chat's service token. */
export function createDeviceToolSource(devices: Client<typeof DeviceService>, options: DeviceToolSourceOptions): DeviceToolSource {
  const ttlMs = options.cacheTtlMs;
  const cache = createListingCache((userId) => fetchDeviceTools(devices, userId), { ttlMs, failureTtlMs: failureTtlOfRpcError(ttlMs) });
  return {
    list: cache.get,
    invalidate: cache.invalidate,

    async call(userId, tool, callId, argumentsJson, timeoutMs, signal): Promise<ToolOutcome> {
      try {
        // keep_running: if this instance dies mid-call, the call runs on and the instance taking the turn over gets its outcome.
        const res = await devices.callTool(
          { userId, tool: tool.name, callId, arguments: JSON.parse(argumentsJson || "{}") as JsonObject, timeout: durationFromMs(timeoutMs), keepRunning: true },
          { signal, timeoutMs: timeoutMs + 2000 },
        );
        if (res.outcome.case === "result") return { ok: true, content: JSON.stringify(res.outcome.value), result: res.outcome.value, deviceId: res.deviceId };
        const e = res.outcome.value;
        return {
          ok: false,
          error: e?.message || "the tool failed without saying why",
          code: e?.code === undefined || e.code === ToolErrorCode.UNSPECIFIED ? ToolErrorCode.FAILED : e.code,
          deviceId: res.deviceId,
        };
      } catch (err) {
        if (signal.aborted) {
          // The turn ended (cancelled, past its deadline): stop the call too. A hand-over lets it run on.
          if (!handsOver(signal.reason)) void devices.cancelToolCall({ userId, callId, reason: "the assistant's turn was cancelled" }, { timeoutMs: 5000 }).catch(() => {});
          throw err;
        }
        const e = ConnectError.from(err);
        // No device could take it: what this instance lists for the user is out of date.
        if (e.code === Code.Unavailable || e.code === Code.FailedPrecondition) cache.invalidate(userId);
        return outcomeOfRpcError(e);
      }
    },
  };
}

/** What the model is told when CallTool produced no outcome. */
export function outcomeOfRpcError(e: ConnectError): ToolOutcome {
  switch (e.code) {
    case Code.Unavailable:
      return { ok: false, code: ToolErrorCode.UNAVAILABLE, error: `no device could run the tool: ${e.rawMessage}` };
    case Code.FailedPrecondition:
      return { ok: false, code: ToolErrorCode.UNKNOWN_TOOL, error: `no connected device offers this tool now: ${e.rawMessage}` };
    case Code.DeadlineExceeded:
      return { ok: false, code: ToolErrorCode.DEADLINE_EXCEEDED, error: `the tool did not answer in time: ${e.rawMessage}` };
    case Code.InvalidArgument:
      return { ok: false, code: ToolErrorCode.INVALID_ARGUMENTS, error: `the call was refused: ${e.rawMessage}` };
    case Code.ResourceExhausted:
      return { ok: false, code: ToolErrorCode.UNAVAILABLE, error: `too many tool calls are waiting for the user's devices: ${e.rawMessage}` };
    case Code.Canceled:
      return { ok: false, code: ToolErrorCode.CANCELLED, error: "the call was cancelled" };
    default:
      return { ok: false, code: ToolErrorCode.UNAVAILABLE, error: `the device service failed (${Code[e.code]}): ${e.rawMessage}` };
  }
}
