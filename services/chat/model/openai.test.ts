import assert from "node:assert/strict";
import { test } from "node:test";
import type { ChatCompletionChunk } from "openai/resources/chat/completions/completions";
import { createOpenAIAssembler, toOpenAIMessages } from "./openai.js";

function chunk(delta: Record<string, unknown>, finish: string | null = null, usage?: ChatCompletionChunk["usage"]): ChatCompletionChunk {
  return { id: "c", object: "chat.completion.chunk", created: 0, model: "m", choices: [{ index: 0, delta, finish_reason: finish }], usage } as ChatCompletionChunk;
}

test("a compatible server that sends whole calls without index and says stop: each call kept, finish is tool_calls", () => {
  const assembler = createOpenAIAssembler();
  assembler.push(chunk({ tool_calls: [{ id: "a", function: { name: "one", arguments: '{"x":1}' } }] }));
  assembler.push(chunk({ tool_calls: [{ id: "b", function: { name: "two", arguments: "{}" } }] }));
  assembler.push(chunk({}, "stop"));
  assert.deepEqual(assembler.finish(), [
    { type: "tool_call", call: { id: "a", name: "one", argumentsJson: '{"x":1}' } },
    { type: "tool_call", call: { id: "b", name: "two", argumentsJson: "{}" } },
    { type: "done", finishReason: "tool_calls", usage: { inputTokens: 0, outputTokens: 0 } },
  ]);
});

test("no finish_reason: the stream was cut, finish says so with undefined", () => {
  const assembler = createOpenAIAssembler();
  assert.deepEqual(assembler.push(chunk({ content: "hi" })), [{ type: "text", delta: "hi" }]);
  assert.equal(assembler.finish(), undefined);
});

test("an unknown finish reason (content_filter) is other; usage from the usage chunk", () => {
  const assembler = createOpenAIAssembler();
  assembler.push(chunk({}, "content_filter"));
  assembler.push({ ...chunk({}), choices: [], usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 } });
  assert.deepEqual(assembler.finish(), [{ type: "done", finishReason: "other", usage: { inputTokens: 5, outputTokens: 2 } }]);
});

test("no system prompt: no system message", () => {
  assert.deepEqual(toOpenAIMessages({ system: "", messages: [{ role: "user", text: "x" }], tools: [], maxOutputTokens: 1 }), [{ role: "user", content: "x" }]);
});
