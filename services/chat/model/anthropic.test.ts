import assert from "node:assert/strict";
import { test } from "node:test";
import { createAnthropicAssembler, toAnthropicMessages } from "./anthropic.js";

test("tool results and the user's next words share one user turn; empty messages are left out", () => {
  const messages = toAnthropicMessages([
    { role: "user", text: "do it" },
    { role: "assistant", text: "", toolCalls: [{ id: "t1", name: "x", argumentsJson: "not json" }] },
    { role: "tool", toolCallId: "t1", name: "x", content: "bad arguments", isError: true },
    { role: "user", text: "never mind" },
    { role: "assistant", text: "", toolCalls: [] },
  ]);
  assert.deepEqual(messages, [
    { role: "user", content: [{ type: "text", text: "do it" }] },
    { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "x", input: {} }] },
    {
      role: "user",
      content: [
        { type: "tool_result", tool_use_id: "t1", content: "bad arguments", is_error: true },
        { type: "text", text: "never mind" },
      ],
    },
  ]);
});

test("usage counts cached input too; stop reasons map; no message_stop means not finished", () => {
  const assembler = createAnthropicAssembler();
  assembler.push({
    type: "message_start",
    message: { usage: { input_tokens: 3, cache_read_input_tokens: 100, cache_creation_input_tokens: 20, output_tokens: 1 } },
  } as never);
  assembler.push({ type: "message_delta", delta: { stop_reason: "refusal", stop_sequence: null }, usage: { output_tokens: 7 } } as never);
  assert.equal(assembler.finished, false);
  assert.deepEqual(assembler.push({ type: "message_stop" }), [{ type: "done", finishReason: "other", usage: { inputTokens: 123, outputTokens: 7 } }]);
  assert.equal(assembler.finished, true);
});
