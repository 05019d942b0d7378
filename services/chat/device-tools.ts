/**
 * The tools of a user's connected devices, through the gateway's generated
 * DeviceService client only: ListDevices for what they offer (Hello.tools),
 * CallTool to run one with a call id, the arguments and a timeout. The
 * gateway's call-id dedupe makes a repeated call return the first outcome,
 * and keep_running lets a call outlive this instance: the instance taking a
 * turn over calls again with the same id and gets the real outcome.
 * CancelToolCall stops a call when its turn ends without a hand-over.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { DeviceService, ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import { handsOver, type AgentTool, type ToolOutcome, type ToolSource } from "./tools.js";

/** Devices listed per page; a user rarely has more than a few. */
const pageSize = 100;

/** The device tool source over a DeviceService client that sends chat's service token. */
export function createDeviceToolSource(devices: Client<typeof DeviceService>): ToolSource {
  return {
    async list(userId, signal) {
      const byName = new Map<string, AgentTool>();
      let pageToken = "";
      do {
        const page = await devices.listDevices({ userId, pageSize, pageToken }, { signal });
        // The most recently connected device's declaration wins, as CallTool picks that device.
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
    },

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
        return outcomeOfRpcError(ConnectError.from(err));
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
