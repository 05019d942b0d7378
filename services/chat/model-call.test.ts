import assert from "node:assert/strict";
import { test } from "node:test";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { defaultAssistant } from "./agents.js";
import { beginFirstCall, begun } from "./model-call.js";
import type { ModelEvent, ModelProvider, ModelRequest } from "./model/index.js";

/** A provider that records what it was asked and answers "hi" once `release` is called. */
function recordingProvider() {
  const asked: { request: ModelRequest; signal: AbortSignal }[] = [];
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const provider: ModelProvider = {
    provider: "openai",
    model: "m",
    async *stream(request, signal): AsyncGenerator<ModelEvent> {
      asked.push({ request, signal });
      await Promise.race([released, new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true }))]);
      yield { type: "text", delta: "hi" };
      yield { type: "done", finishReason: "stop", usage: { inputTokens: 1, outputTokens: 1 } };
    },
  };
  return { provider, asked, release };
}

const input = { agent: defaultAssistant, tier: Tier.PRO, message: "hello", tools: [], history: [{ role: "user", text: "before" } as const], maxOutputTokens: 100, deadlineMs: 60_000 };

test("a first call is sent at once and its events are read later, in order", async () => {
  const { provider, asked, release } = recordingProvider();
  const first = beginFirstCall(provider, input);
  assert.equal(asked.length, 1, "sent before anything reads it");
  assert.deepEqual(asked[0]!.request.messages, [{ role: "user", text: "before" }, { role: "user", text: "hello" }]);
  release();
  const events: ModelEvent[] = [];
  for await (const e of first.call.events) events.push(e);
  assert.deepEqual(events.map((e) => e.type), ["text", "done"]);
});

test("aborting a first call nobody read aborts the request it sent", async () => {
  const { provider, asked } = recordingProvider();
  const first = beginFirstCall(provider, input);
  first.abort(new Error("refused"));
  assert.equal(asked[0]!.signal.aborted, true);
  await assert.rejects(async () => {
    for await (const _ of first.call.events);
  }, /refused/);
});

test("begun reads the source's first result once, then goes on from the source", async () => {
  let pulls = 0;
  async function* source() {
    for (let i = 0; i < 3; i++) {
      pulls++;
      yield i;
    }
  }
  const it = begun(source());
  await Promise.resolve();
  assert.equal(pulls, 1);
  const seen: number[] = [];
  for await (const n of it) seen.push(n);
  assert.deepEqual(seen, [0, 1, 2]);
});
