/**
 * The model layer through the real `openai` and `@anthropic-ai/sdk` clients,
 * pointed at the local server that speaks each provider's wire format
 * (test/support/llm-server.ts): streamed text, tool calls assembled from
 * fragments, usage, finish reasons, what the model is sent, each provider
 * fault as its gRPC code, and cancellation.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ConfigError } from "../../platform/index.js";
import {
  createModelProvider,
  type ModelEvent,
  type ModelProvider,
  type ModelRequest,
  modelNotConfigured,
  readModelSettings,
} from "../../services/chat/model/index.js";
import { type LlmServer, type LlmWireFormat, startLlmServer, statusReply, textReply, toolCallReply } from "../support/llm-server.js";

/** Short enough to keep the stall tests quick, long enough that a loaded machine's slow first call is no stall. */
const STALL_MS = 1000;

function request(overrides: Partial<ModelRequest> = {}): ModelRequest {
  return {
    system: "You are terse.",
    messages: [{ role: "user", text: "hello" }],
    tools: [],
    maxOutputTokens: 256,
    ...overrides,
  };
}

async function collect(provider: ModelProvider, req: ModelRequest, signal = new AbortController().signal): Promise<ModelEvent[]> {
  const events: ModelEvent[] = [];
  for await (const event of provider.stream(req, signal)) events.push(event);
  return events;
}

/** The events before the failure and the failure itself. */
async function failure(provider: ModelProvider, req: ModelRequest = request()): Promise<{ events: ModelEvent[]; error: ConnectError }> {
  const events: ModelEvent[] = [];
  try {
    for await (const event of provider.stream(req, new AbortController().signal)) events.push(event);
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    return { events, error: err };
  }
  assert.fail(`expected the stream to fail; it yielded ${JSON.stringify(events)}`);
}

function texts(events: ModelEvent[]): string {
  return events.flatMap((e) => (e.type === "text" ? [e.delta] : [])).join("");
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

for (const format of ["openai", "anthropic"] as const satisfies LlmWireFormat[]) {
  describe(`${format} adapter through the real SDK`, () => {
    let server: LlmServer;
    let provider: ModelProvider;

    before(async () => {
      server = await startLlmServer();
      provider = createModelProvider(readModelSettings(server.env(format, "model-x")))!;
    });
    after(() => server.close());

    test("streams text deltas, then done with usage and stop", async () => {
      server.script({ kind: "reply", text: ["Hel", "lo ", "there"], usage: { inputTokens: 21, outputTokens: 3 }, ping: true });
      const events = await collect(provider, request(), new AbortController().signal);
      assert.deepEqual(events, [
        { type: "text", delta: "Hel" },
        { type: "text", delta: "lo " },
        { type: "text", delta: "there" },
        { type: "done", finishReason: "stop", usage: { inputTokens: 21, outputTokens: 3 } },
      ]);
      assert.equal(provider.provider, format);
      assert.equal(provider.model, "model-x");
    });

    test("assembles several tool calls from their fragments, in order", async () => {
      server.script(
        toolCallReply(
          [
            { id: "call-a", name: "filesystem_read_file", argumentFragments: ['{"pa', 'th": "/tmp/', 'a.txt"}'] },
            { id: "call-b", name: "clock_now", argumentFragments: [] },
            { id: "call-c", name: "notes_add", argumentFragments: ['{"text":', ' "x"}'] },
          ],
          ["Let me look."],
        ),
      );
      const events = await collect(provider, request(), new AbortController().signal);
      assert.deepEqual(events, [
        { type: "text", delta: "Let me look." },
        { type: "tool_call", call: { id: "call-a", name: "filesystem_read_file", argumentsJson: '{"path": "/tmp/a.txt"}' } },
        { type: "tool_call", call: { id: "call-b", name: "clock_now", argumentsJson: "{}" } },
        { type: "tool_call", call: { id: "call-c", name: "notes_add", argumentsJson: '{"text": "x"}' } },
        { type: "done", finishReason: "tool_calls", usage: { inputTokens: 10, outputTokens: 9 } },
      ]);
    });

    test("a reply cut by the token limit finishes with length", async () => {
      server.script({ kind: "reply", text: ["partial"], finishReason: "length" });
      const events = await collect(provider, request(), new AbortController().signal);
      assert.deepEqual(events.at(-1), { type: "done", finishReason: "length", usage: { inputTokens: 10, outputTokens: 1 } });
    });

    test("sends the system prompt, history, tool results and tools in the provider's own shape", async () => {
      server.script(textReply("ok"));
      const seen = server.requests.length;
      await collect(
        provider,
        request({
          messages: [
            { role: "user", text: "read a.txt and the time" },
            {
              role: "assistant",
              text: "Reading.",
              toolCalls: [
                { id: "c1", name: "filesystem_read_file", argumentsJson: '{"path":"a.txt"}' },
                { id: "c2", name: "clock_now", argumentsJson: "{}" },
              ],
            },
            { role: "tool", toolCallId: "c1", name: "filesystem_read_file", content: "contents of a", isError: false },
            { role: "tool", toolCallId: "c2", name: "clock_now", content: "device offline", isError: true },
          ],
          tools: [{ name: "clock_now", description: "the time", inputSchema: { type: "object", properties: {} } }],
          maxOutputTokens: 99,
        }),
        new AbortController().signal,
      );
      const sent = server.requests[seen]!;
      assert.equal(sent.format, format);
      assert.equal(sent.body.model, "model-x");
      assert.equal(sent.body.stream, true);
      if (format === "openai") {
        assert.equal(sent.headers.authorization, "Bearer test-key");
        assert.deepEqual(sent.body.stream_options, { include_usage: true });
        assert.equal(sent.body.max_completion_tokens, 99);
        assert.deepEqual(sent.body.messages, [
          { role: "system", content: "You are terse." },
          { role: "user", content: "read a.txt and the time" },
          {
            role: "assistant",
            content: "Reading.",
            tool_calls: [
              { id: "c1", type: "function", function: { name: "filesystem_read_file", arguments: '{"path":"a.txt"}' } },
              { id: "c2", type: "function", function: { name: "clock_now", arguments: "{}" } },
            ],
          },
          { role: "tool", tool_call_id: "c1", content: "contents of a" },
          { role: "tool", tool_call_id: "c2", content: "Error: device offline" },
        ]);
        assert.deepEqual(sent.body.tools, [
          { type: "function", function: { name: "clock_now", description: "the time", parameters: { type: "object", properties: {} } } },
        ]);
      } else {
        // This SDK version sends the key as a bearer token; older ones as x-api-key.
        assert.match(String(sent.headers["x-api-key"] ?? sent.headers.authorization), /^(Bearer )?test-key$/);
        assert.equal(sent.body.max_tokens, 99);
        assert.equal(sent.body.system, "You are terse.");
        assert.deepEqual(sent.body.messages, [
          { role: "user", content: [{ type: "text", text: "read a.txt and the time" }] },
          {
            role: "assistant",
            content: [
              { type: "text", text: "Reading." },
              { type: "tool_use", id: "c1", name: "filesystem_read_file", input: { path: "a.txt" } },
              { type: "tool_use", id: "c2", name: "clock_now", input: {} },
            ],
          },
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "c1", content: "contents of a", is_error: false },
              { type: "tool_result", tool_use_id: "c2", content: "device offline", is_error: true },
            ],
          },
        ]);
        assert.deepEqual(sent.body.tools, [{ name: "clock_now", description: "the time", input_schema: { type: "object", properties: {} } }]);
      }
    });

    for (const status of [401, 403]) {
      test(`HTTP ${status} (the provider refuses our key) is FAILED_PRECONDITION for the operator, not UNAUTHENTICATED`, async () => {
        server.script(statusReply(status, undefined, "invalid api key sk-...1234"));
        const { error } = await failure(provider);
        assert.equal(error.code, Code.FailedPrecondition);
        assert.match(error.message, /LLM_API_KEY/);
        assert.doesNotMatch(error.message, /sk-/, "the provider's text, which may echo the key, is left out");
      });
    }

    test("HTTP 429 is RESOURCE_EXHAUSTED with RetryInfo from retry-after, and the SDK does not retry", async () => {
      const seen = server.requests.length;
      server.script(statusReply(429, "2", "slow down"), textReply("a retry would get this"));
      const { error } = await failure(provider);
      assert.equal(error.code, Code.ResourceExhausted);
      assert.equal(error.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds, 2n);
      assert.equal(server.requests.length, seen + 1);
      assert.equal(server.pending(), 1);
      await collect(provider, request(), new AbortController().signal); // take the spare reply
    });

    test("HTTP 500 is UNAVAILABLE, without an SDK retry", async () => {
      const seen = server.requests.length;
      server.script(statusReply(500));
      const { error } = await failure(provider);
      assert.equal(error.code, Code.Unavailable);
      assert.match(error.message, /HTTP 500/);
      assert.equal(server.requests.length, seen + 1);
    });

    test("a malformed chunk mid-answer is UNAVAILABLE after the text before it", async () => {
      server.script({ kind: "reply", text: ["fine ", "then"], fault: { afterParts: 1, type: "malformed" } });
      const { events, error } = await failure(provider);
      assert.equal(error.code, Code.Unavailable);
      assert.match(error.message, /malformed/);
      assert.equal(texts(events), "fine ");
      assert.ok(!events.some((e) => e.type === "done"));
    });

    test("a stream that stalls mid-answer is UNAVAILABLE after the stall timeout, and the connection is closed", async () => {
      server.script({ kind: "reply", text: ["one ", "two"], fault: { afterParts: 1, type: "stall" } });
      const quickToGiveUp = createModelProvider(readModelSettings({ ...server.env(format), LLM_STALL_TIMEOUT_MS: String(STALL_MS) }))!;
      const { events, error } = await failure(quickToGiveUp);
      assert.equal(error.code, Code.Unavailable);
      assert.match(error.message, /sent nothing for 1000 ms \(LLM_STALL_TIMEOUT_MS\)/);
      assert.equal(texts(events), "one ");
      await until(() => server.openStreams() === 0, "the stalled stream to close");
    });

    test("a provider that never answers is UNAVAILABLE after the stall timeout", async () => {
      server.script({ kind: "hang" });
      const quickToGiveUp = createModelProvider(readModelSettings({ ...server.env(format), LLM_STALL_TIMEOUT_MS: String(STALL_MS) }))!;
      const { events, error } = await failure(quickToGiveUp);
      assert.equal(error.code, Code.Unavailable);
      assert.match(error.message, /sent nothing for 1000 ms/);
      assert.deepEqual(events, []);
      await until(() => server.openStreams() === 0, "the unanswered request to close");
    });

    test("a stream cut before the finish is UNAVAILABLE, never a silent short answer", async () => {
      server.script({ kind: "reply", text: ["half"], fault: { afterParts: 1, type: "cut" } });
      const { events, error } = await failure(provider);
      assert.equal(error.code, Code.Unavailable);
      assert.match(error.message, /ended its stream before finishing/);
      assert.ok(!events.some((e) => e.type === "done"));
    });

    test("the provider's in-stream error event is UNAVAILABLE", async () => {
      server.script({ kind: "reply", text: ["a", "b"], fault: { afterParts: 1, type: "error" } });
      const { error } = await failure(provider);
      assert.equal(error.code, Code.Unavailable);
    });

    test("aborting the signal stops the stream with CANCELED and closes the request", async () => {
      server.script({ kind: "reply", text: ["first ", "never"], fault: { afterParts: 1, type: "stall" } });
      const controller = new AbortController();
      const events: ModelEvent[] = [];
      let caught: unknown;
      try {
        for await (const event of provider.stream(request(), controller.signal)) {
          events.push(event);
          controller.abort(); // the first delta arrived: the user cancels
        }
      } catch (err) {
        caught = err;
      }
      assert.ok(caught instanceof ConnectError);
      assert.equal(caught.code, Code.Canceled);
      assert.equal(texts(events), "first ");
      await until(() => server.openStreams() === 0, "the cancelled stream to close");
    });

    test("a consumer that stops reading early closes the request", async () => {
      server.script({ kind: "reply", text: ["enough", "more"], fault: { afterParts: 1, type: "stall" } });
      for await (const event of provider.stream(request(), new AbortController().signal)) {
        assert.equal(event.type, "text");
        break;
      }
      await until(() => server.openStreams() === 0, "the abandoned stream to close");
    });

    test("an abort reason that is a ConnectError (a deadline) is what the stream throws", async () => {
      server.script({ kind: "reply", text: ["x", "y"], fault: { afterParts: 1, type: "stall" } });
      const controller = new AbortController();
      const events = provider.stream(request(), controller.signal)[Symbol.asyncIterator]();
      assert.equal((await events.next()).done, false);
      controller.abort(new ConnectError("turn deadline passed", Code.DeadlineExceeded));
      await assert.rejects(events.next(), (err: unknown) => err instanceof ConnectError && err.code === Code.DeadlineExceeded);
    });

    test("an unreachable provider is UNAVAILABLE", async () => {
      const closed = await startLlmServer();
      const env = closed.env(format);
      await closed.close();
      const unreachable = createModelProvider(readModelSettings(env))!;
      const { error } = await failure(unreachable);
      assert.equal(error.code, Code.Unavailable);
      assert.match(error.message, /could not be reached/);
    });
  });
}

describe("model settings", () => {
  test("no LLM_PROVIDER: no provider, and the error a turn answers names the variables", () => {
    assert.equal(createModelProvider(readModelSettings({})), undefined);
    const err = modelNotConfigured();
    assert.equal(err.code, Code.FailedPrecondition);
    for (const name of ["LLM_PROVIDER", "LLM_API_KEY", "LLM_MODEL", "LLM_BASE_URL"]) assert.match(err.message, new RegExp(name));
  });

  test("a provider without key or model is a ConfigError naming them; the key is never echoed", () => {
    assert.throws(() => readModelSettings({ LLM_PROVIDER: "openai" }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /LLM_API_KEY is required/);
      assert.match(err.message, /LLM_MODEL is required/);
      return true;
    });
    assert.throws(() => readModelSettings({ LLM_PROVIDER: "gemini" }), /LLM_PROVIDER: expected one of openai, anthropic/);
    assert.throws(() => readModelSettings({ LLM_PROVIDER: "openai", LLM_API_KEY: "k", LLM_MODEL: "m", LLM_BASE_URL: "ftp://x" }), /LLM_BASE_URL/);
  });
});
