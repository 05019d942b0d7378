import assert from "node:assert/strict";
import { test } from "node:test";
import { messagesOfSteps, positionOf, toolCallId, usageOfSteps, type ModelStep, type ToolStep } from "./steps.js";

const model = (step: number, calls: number): ModelStep => ({
  kind: "model",
  step,
  text: `t${step}`,
  toolCalls: Array.from({ length: calls }, (_, i) => ({ id: `m${step}_${i}`, name: "echo", argumentsJson: "{}" })),
  inputTokens: 10,
  outputTokens: 5,
  finish: calls > 0 ? "tool_calls" : "stop",
  eventSeq: 1,
});
const tool = (step: number, modelCallId: string): ToolStep => ({ kind: "tool", step, modelCallId, safeName: "echo", tool: "echo", ok: true, content: "{}", eventSeq: 2 });

test("a turn with no steps calls the model first", () => {
  assert.deepEqual(positionOf([]), { next: "model", step: 0 });
});

test("tool calls of the last model step that have no outcome are owed, by step", () => {
  const m = model(0, 3);
  assert.deepEqual(positionOf([m, tool(2, "m0_1")]), { next: "tools", model: m, owed: [1, 3] });
});

test("once every call has its outcome the model is called again after them", () => {
  assert.deepEqual(positionOf([model(0, 2), tool(1, "m0_0"), tool(2, "m0_1")]), { next: "model", step: 3 });
});

test("a model step without tool calls finishes the turn", () => {
  const last = model(3, 0);
  assert.deepEqual(positionOf([model(0, 2), tool(1, "a"), tool(2, "b"), last]), { next: "finish", model: last });
});

test("steps become assistant and tool messages in order, and usage adds up", () => {
  const steps = [model(0, 1), tool(1, "m0_0"), model(2, 0)];
  assert.deepEqual(
    messagesOfSteps(steps).map((m) => m.role),
    ["assistant", "tool", "assistant"],
  );
  assert.deepEqual(usageOfSteps(steps), { inputTokens: 20, outputTokens: 10, toolCalls: 1 });
});

test("a tool call id is the same for the same turn and step, and an id the gateway accepts", () => {
  const turn = "0123456789abcdef0123456789abcdef";
  assert.equal(toolCallId(turn, 7), toolCallId(turn, 7));
  assert.notEqual(toolCallId(turn, 7), toolCallId(turn, 8));
  assert.match(toolCallId(turn, 12345), /^[A-Za-z0-9_-]{1,64}$/);
});
