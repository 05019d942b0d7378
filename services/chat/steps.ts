/**
 * A turn's recorded steps and what they mean: the model messages they add,
 * which tool calls are still owed, and the tool call id of a step. Pure, so
 * a turn picked up by another instance is rebuilt exactly as it was.
 */
import type { ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import type { ModelFinishReason, ModelMessage, ModelToolCall } from "./model/index.js";

/** A model call and what it returned. */
export interface ModelStep {
  readonly kind: "model";
  readonly step: number;
  readonly text: string;
  /** Tool calls as the model named them (provider-safe names); call i is step `step + 1 + i`. */
  readonly toolCalls: readonly ModelToolCall[];
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly finish: ModelFinishReason;
  /** The sequence of the turn's last event when the step was recorded. */
  readonly eventSeq: number;
}

/** A tool call and its outcome. */
export interface ToolStep {
  readonly kind: "tool";
  readonly step: number;
  /** The model's id of the call (the tool message answers it). */
  readonly modelCallId: string;
  /** The provider-safe name the model used. */
  readonly safeName: string;
  /** The tool's own name, empty when the model named no known tool. */
  readonly tool: string;
  readonly ok: boolean;
  /** The result as JSON text, or the error message. */
  readonly content: string;
  readonly code?: ToolErrorCode;
  readonly eventSeq: number;
}

/** A recorded step. */
export type TurnStep = ModelStep | ToolStep;

/**
 * The id of the device call made at `step` of `turnId`: a repeat (after a
 * takeover) has the same id, so the gateway returns the first outcome.
 */
export function toolCallId(turnId: string, step: number): string {
  return `${turnId}-${step}`;
}

/** The model messages the steps add after the user's message. */
export function messagesOfSteps(steps: readonly TurnStep[]): ModelMessage[] {
  const out: ModelMessage[] = [];
  for (const s of steps) {
    if (s.kind === "model") out.push({ role: "assistant", text: s.text, toolCalls: s.toolCalls });
    else out.push({ role: "tool", toolCallId: s.modelCallId, name: s.safeName, content: s.content, isError: !s.ok });
  }
  return out;
}

/** Where a turn stands, judged from its steps. */
export type TurnPosition =
  | { readonly next: "model"; readonly step: number }
  | { readonly next: "tools"; readonly model: ModelStep; readonly owed: readonly number[] }
  | { readonly next: "finish"; readonly model: ModelStep };

/** What to do next: call the model, run the tool calls still owed, or finish. */
export function positionOf(steps: readonly TurnStep[]): TurnPosition {
  const lastModel = [...steps].reverse().find((s): s is ModelStep => s.kind === "model");
  if (lastModel === undefined) return { next: "model", step: steps.length === 0 ? 0 : steps.at(-1)!.step + 1 };
  if (lastModel.toolCalls.length === 0) return { next: "finish", model: lastModel };
  const done = new Set(steps.filter((s) => s.kind === "tool" && s.step > lastModel.step).map((s) => s.step));
  const owed = lastModel.toolCalls.map((_, i) => lastModel.step + 1 + i).filter((st) => !done.has(st));
  if (owed.length > 0) return { next: "tools", model: lastModel, owed };
  return { next: "model", step: lastModel.step + 1 + lastModel.toolCalls.length };
}

/** Tokens and tool calls (every call the model asked for, run or refused) the steps used. */
export function usageOfSteps(steps: readonly TurnStep[]): { inputTokens: number; outputTokens: number; toolCalls: number } {
  let inputTokens = 0;
  let outputTokens = 0;
  let toolCalls = 0;
  for (const s of steps) {
    if (s.kind === "model") (inputTokens += s.inputTokens), (outputTokens += s.outputTokens);
    else toolCalls++;
  }
  return { inputTokens, outputTokens, toolCalls };
}
