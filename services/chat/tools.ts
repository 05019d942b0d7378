/**
 * Where the tools offered to the model come from. A `ToolSource` lists a
 * user's tools and runs one; the device source (device-tools.ts) is the first,
 * plugins add theirs later. Tools are described the way the Model Context
 * Protocol describes them (name, description, JSON Schema input,
 * annotations), so one list serves both.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import type { StopReason } from "./turn-runner.js";

/** A tool the assistant may call for a user. */
export interface AgentTool {
  /** The tool's own name, e.g. "filesystem.read_file" (not provider-safe). */
  readonly name: string;
  readonly description: string;
  /** JSON Schema of the arguments object. */
  readonly inputSchema: Record<string, unknown>;
  readonly annotations: { readonly readOnlyHint?: boolean; readonly destructiveHint?: boolean };
  /** Who provides it: "device" or "plugin:<id>". */
  readonly origin: string;
}

/** What running a tool produced: a result (JSON text) or a failure the model is told about. */
export type ToolOutcome =
  | { readonly ok: true; readonly content: string; readonly result?: JsonObject; readonly deviceId?: string }
  | { readonly ok: false; readonly error: string; readonly code?: ToolErrorCode; readonly deviceId?: string };

/** A provider of tools. */
export interface ToolSource {
  /** The tools `userId` can use now. */
  list(userId: string, signal: AbortSignal): Promise<AgentTool[]>;
  /**
   * Runs `tool` for `userId` once: a repeated `callId` must return the first
   * call's outcome instead of running it again. Failures are outcomes, not
   * throws (only an aborted `signal` throws). An abort stops the call, except
   * a hand-over (`handsOver`): then the call runs on, and the instance that
   * takes the turn over gets its outcome by calling again with `callId`.
   */
  call(userId: string, tool: AgentTool, callId: string, argumentsJson: string, timeoutMs: number, signal: AbortSignal): Promise<ToolOutcome>;
}

/**
 * Whether an abort `reason` hands the turn to another instance (this one
 * shuts down, or lost the turn's lease) rather than ending it: the turn's
 * tool calls must then run on, not stop.
 */
export function handsOver(reason: unknown): boolean {
  return reason === ("shutdown" satisfies StopReason) || reason === ("lost" satisfies StopReason);
}

/**
 * Several sources as one: their tools listed together (the first source
 * naming a tool wins), each call routed to the source that listed it.
 */
export function combineToolSources(sources: Readonly<Record<string, ToolSource>>): ToolSource {
  const entries = Object.entries(sources);
  return {
    async list(userId, signal) {
      // One source down (plugins, say) must not cost the user the others' tools: only when all fail does the listing fail.
      const settled = await Promise.allSettled(entries.map(([, s]) => s.list(userId, signal)));
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed !== undefined && settled.every((r) => r.status === "rejected")) throw failed.reason;
      const lists = settled.map((r) => (r.status === "fulfilled" ? r.value : []));
      const seen = new Set<string>();
      const out: AgentTool[] = [];
      for (const tool of lists.flat()) {
        if (seen.has(tool.name)) continue;
        seen.add(tool.name);
        out.push(tool);
      }
      return out;
    },
    call(userId, tool, callId, argumentsJson, timeoutMs, signal) {
      const prefix = tool.origin.split(":", 1)[0]!;
      const source = sources[prefix] ?? sources[tool.origin];
      if (source === undefined) return Promise.resolve({ ok: false, error: `no source runs tools of origin "${tool.origin}"` });
      return source.call(userId, tool, callId, argumentsJson, timeoutMs, signal);
    },
  };
}
