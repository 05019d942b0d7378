/**
 * A local language-model server that speaks both providers' streaming wire
 * formats, for tests and benches: the real `openai` and `@anthropic-ai/sdk`
 * clients point at it through LLM_BASE_URL.
 *
 * - OpenAI Chat Completions: POST /v1/chat/completions, SSE `data: {...}`
 *   chunks (choices[].delta.content, choices[].delta.tool_calls fragments
 *   {index, id?, type?, function: {name?, arguments?}}, finish_reason, a usage
 *   chunk when stream_options.include_usage), then `data: [DONE]`.
 * - Anthropic Messages: POST /v1/messages, named SSE events message_start,
 *   content_block_start (text or tool_use), content_block_delta (text_delta,
 *   input_json_delta), content_block_stop, message_delta, message_stop, ping.
 *
 * Each request takes the next scripted reply or fault from a queue (`script`),
 * or, in benchmark mode, a generated reply at a fixed time to first token and
 * token rate. Every request body is recorded (`requests`) so a test can assert
 * what the model was sent. With the queue empty and no benchmark mode a request
 * gets HTTP 500 saying so, and the test fails loudly rather than hanging.
 *
 * Run alone (for a bench in another process):
 *   node --import tsx test/support/llm-server.ts [port] [ttftMs] [tokensPerSecond] [tokens]
 */
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";

/** The wire formats the server speaks. */
export type LlmWireFormat = "openai" | "anthropic";

/** A tool call the scripted model makes; its arguments go out in the given fragments. */
export interface ScriptedToolCall {
  /** Default: call_<n> (OpenAI) or toolu_<n> (Anthropic). */
  readonly id?: string;
  readonly name: string;
  /** JSON text in pieces; joined they are the arguments (need not be valid JSON: tests of bad arguments). */
  readonly argumentFragments: readonly string[];
}

/** A fault injected into a streaming reply after `afterParts` text pieces / tool-call fragments were sent. */
export interface StreamFault {
  readonly afterParts: number;
  /**
   * stall: send nothing more, keep the connection open;
   * malformed: a chunk that is not JSON; cut: close the stream without finishing;
   * error: the provider's in-stream error event (Anthropic `event: error`, OpenAI `data: {"error": ...}`).
   */
  readonly type: "stall" | "malformed" | "cut" | "error";
}

/** A scripted streaming reply: text pieces, then tool calls, then the finish. */
export interface ScriptedReply {
  readonly kind: "reply";
  /** Each piece is its own text delta. */
  readonly text?: readonly string[];
  readonly toolCalls?: readonly ScriptedToolCall[];
  /** Default: tool_calls when there are tool calls, else stop; mapped to each format's words. */
  readonly finishReason?: "stop" | "tool_calls" | "length";
  /** Default: 10 input tokens, one output token a part. */
  readonly usage?: { readonly inputTokens: number; readonly outputTokens: number };
  /** Send a ping event between parts (Anthropic only; OpenAI has none). */
  readonly ping?: boolean;
  readonly fault?: StreamFault;
}

/** A scripted HTTP error instead of a stream. */
export interface ScriptedStatus {
  readonly kind: "status";
  readonly status: number;
  /** Sent as the retry-after header (seconds or an HTTP date). */
  readonly retryAfter?: string;
  readonly message?: string;
}

/** A silent provider: the request is read and never answered, not even with headers. */
export interface ScriptedHang {
  readonly kind: "hang";
}

/** One entry of the script queue. */
export type Scripted = ScriptedReply | ScriptedStatus | ScriptedHang;

/** Benchmark mode: every request (when the script queue is empty) gets `tokens` text tokens paced so. */
export interface BenchmarkReply {
  /** Time from the request to the first text token, ms. */
  readonly timeToFirstTokenMs: number;
  readonly tokensPerSecond: number;
  readonly tokens: number;
  /** The text of one token; default "tok ". */
  readonly token?: string;
}

/** A request the server received. */
export interface RecordedRequest {
  readonly format: LlmWireFormat;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  /** The parsed JSON body: model, messages, tools, max tokens… */
  readonly body: Record<string, unknown>;
}

/** A running local model server. */
export interface LlmServer {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** LLM_BASE_URL for each provider's SDK (OpenAI's includes /v1; Anthropic's SDK adds it itself). */
  baseUrl(format: LlmWireFormat): string;
  /** The environment a chat process needs to use this server as `format`. */
  env(format: LlmWireFormat, model?: string): Record<string, string>;
  /** Queues replies and faults, taken one per request in order. */
  script(...entries: Scripted[]): void;
  /** How many scripted entries no request has taken yet. */
  pending(): number;
  /** Every request received so far, in order. */
  readonly requests: RecordedRequest[];
  /** Resolves when at least `count` requests have arrived (no sleeping: resolves on arrival). */
  waitForRequests(count: number): Promise<void>;
  /** How many streams are open now (a stalled stream stays open until its client lets go). */
  openStreams(): number;
  /** Turns benchmark mode on (or off with undefined). */
  benchmark(reply: BenchmarkReply | undefined): void;
  /** Stops the server, ending open (e.g. stalled) streams. */
  close(): Promise<void>;
}

/** A text reply in the given pieces. */
export function textReply(...pieces: string[]): ScriptedReply {
  return { kind: "reply", text: pieces };
}

/** A reply that calls tools (optionally after some text). */
export function toolCallReply(calls: ScriptedToolCall[], text: string[] = []): ScriptedReply {
  return { kind: "reply", text, toolCalls: calls };
}

/** An HTTP error reply. */
export function statusReply(status: number, retryAfter?: string, message?: string): ScriptedStatus {
  return { kind: "status", status, retryAfter, message };
}

/** Starts the server on `port` (default: a free one) on loopback. */
export async function startLlmServer(port = 0): Promise<LlmServer> {
  const queue: Scripted[] = [];
  const requests: RecordedRequest[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  let bench: BenchmarkReply | undefined;
  const open = new Set<http.ServerResponse>();

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: `llm-server: ${String(err)}` } }));
    });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    open.add(res);
    res.once("close", () => open.delete(res));
    const format = formatOf(req);
    if (format === undefined) {
      res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: `no route ${req.method} ${req.url}` } }));
      return;
    }
    const body = JSON.parse(await readAll(req)) as Record<string, unknown>;
    requests.push({ format, path: req.url ?? "", headers: req.headers, body });
    for (const w of waiters.filter((w) => requests.length >= w.count)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
    const entry = queue.shift();
    if (entry === undefined && bench !== undefined) return sendBenchmark(res, format, body, bench);
    if (entry === undefined) return sendError(res, format, 500, "llm-server: no scripted reply left for this request");
    if (entry.kind === "hang") return; // closed when the client gives up or the server closes
    if (entry.kind === "status") return sendError(res, format, entry.status, entry.message ?? `scripted HTTP ${entry.status}`, entry.retryAfter);
    const frames = format === "openai" ? openaiFrames(entry, body, requests.length) : anthropicFrames(entry, body, requests.length);
    await sendFrames(res, frames, entry.fault, format);
  }

  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const baseUrl = (format: LlmWireFormat) => (format === "openai" ? `${url}/v1` : url);
  return {
    url,
    baseUrl,
    env: (format, model = "test-model") => ({ LLM_PROVIDER: format, LLM_BASE_URL: baseUrl(format), LLM_API_KEY: "test-key", LLM_MODEL: model }),
    script: (...entries) => void queue.push(...entries),
    pending: () => queue.length,
    requests,
    waitForRequests: (count) =>
      requests.length >= count ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ count, resolve })),
    openStreams: () => open.size,
    benchmark: (reply) => void (bench = reply),
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}

function formatOf(req: http.IncomingMessage): LlmWireFormat | undefined {
  if (req.method !== "POST") return undefined;
  const path = (req.url ?? "").split("?")[0];
  if (path === "/v1/chat/completions") return "openai";
  if (path === "/v1/messages") return "anthropic";
  return undefined;
}

async function readAll(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** Each provider's error body and status. */
function sendError(res: http.ServerResponse, format: LlmWireFormat, status: number, message: string, retryAfter?: string): void {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (retryAfter !== undefined) headers["retry-after"] = retryAfter;
  const body =
    format === "openai"
      ? { error: { message, type: status === 429 ? "rate_limit_exceeded" : "invalid_request_error", code: null } }
      : { type: "error", error: { type: anthropicErrorType(status), message } };
  res.writeHead(status, headers).end(JSON.stringify(body));
}

function anthropicErrorType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 429) return "rate_limit_error";
  if (status === 529) return "overloaded_error";
  if (status >= 500) return "api_error";
  return "invalid_request_error";
}

/**
 * A stream as groups of SSE frames: group 0 is the preamble, then one group a
 * part (a text piece or a tool-call fragment), then the finish. A fault after
 * n parts goes after group n.
 */
type Frames = string[][];

function sse(data: unknown, event?: string): string {
  return `${event === undefined ? "" : `event: ${event}\n`}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}

function defaultUsage(reply: ScriptedReply) {
  const parts = (reply.text?.length ?? 0) + (reply.toolCalls ?? []).reduce((n, c) => n + c.argumentFragments.length + 1, 0);
  return reply.usage ?? { inputTokens: 10, outputTokens: parts };
}

function finishOf(reply: ScriptedReply): "stop" | "tool_calls" | "length" {
  return reply.finishReason ?? ((reply.toolCalls?.length ?? 0) > 0 ? "tool_calls" : "stop");
}

function openaiFrames(reply: ScriptedReply, body: Record<string, unknown>, n: number): Frames {
  const base = { id: `chatcmpl-${n}`, object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000), model: String(body.model) };
  const chunk = (delta: Record<string, unknown>, finish: string | null = null) => sse({ ...base, choices: [{ index: 0, delta, finish_reason: finish }] });
  const groups: Frames = [[chunk({ role: "assistant", content: "" })]];
  for (const piece of reply.text ?? []) groups.push([chunk({ content: piece })]);
  (reply.toolCalls ?? []).forEach((call, index) => {
    const id = call.id ?? `call_${n}_${index}`;
    groups.push([chunk({ tool_calls: [{ index, id, type: "function", function: { name: call.name, arguments: "" } }] })]);
    for (const fragment of call.argumentFragments) groups.push([chunk({ tool_calls: [{ index, function: { arguments: fragment } }] })]);
  });
  const usage = defaultUsage(reply);
  const finish = [chunk({}, finishOf(reply))];
  const streamOptions = body.stream_options as { include_usage?: boolean } | undefined;
  if (streamOptions?.include_usage) {
    const u = { prompt_tokens: usage.inputTokens, completion_tokens: usage.outputTokens, total_tokens: usage.inputTokens + usage.outputTokens };
    finish.push(sse({ ...base, choices: [], usage: u }));
  }
  finish.push(sse("[DONE]"));
  groups.push(finish);
  return groups;
}

const anthropicStop = { stop: "end_turn", tool_calls: "tool_use", length: "max_tokens" } as const;

function anthropicFrames(reply: ScriptedReply, body: Record<string, unknown>, n: number): Frames {
  const usage = defaultUsage(reply);
  const message = {
    id: `msg_${n}`,
    type: "message",
    role: "assistant",
    content: [],
    model: String(body.model),
    stop_reason: null,
    stop_sequence: null,
    usage: { input_tokens: usage.inputTokens, output_tokens: 1 },
  };
  const groups: Frames = [[sse({ type: "message_start", message }, "message_start")]];
  const ping = reply.ping ? [sse({ type: "ping" }, "ping")] : [];
  let block = 0;
  const text = reply.text ?? [];
  text.forEach((piece, i) => {
    const start = i === 0 ? [sse({ type: "content_block_start", index: block, content_block: { type: "text", text: "" } }, "content_block_start")] : [];
    groups.push([...start, ...ping, sse({ type: "content_block_delta", index: block, delta: { type: "text_delta", text: piece } }, "content_block_delta")]);
  });
  const stop = (index: number) => sse({ type: "content_block_stop", index }, "content_block_stop");
  if (text.length > 0) block++;
  (reply.toolCalls ?? []).forEach((call, i) => {
    const index = block + i;
    const before = index > 0 ? [stop(index - 1)] : [];
    const id = call.id ?? `toolu_${n}_${i}`;
    groups.push([...before, sse({ type: "content_block_start", index, content_block: { type: "tool_use", id, name: call.name, input: {} } }, "content_block_start")]);
    for (const fragment of call.argumentFragments) {
      groups.push([...ping, sse({ type: "content_block_delta", index, delta: { type: "input_json_delta", partial_json: fragment } }, "content_block_delta")]);
    }
  });
  const blocks = block + (reply.toolCalls?.length ?? 0);
  groups.push([
    ...(blocks > 0 ? [stop(blocks - 1)] : []),
    sse({ type: "message_delta", delta: { stop_reason: anthropicStop[finishOf(reply)], stop_sequence: null }, usage: { output_tokens: usage.outputTokens } }, "message_delta"),
    sse({ type: "message_stop" }, "message_stop"),
  ]);
  return groups;
}

function faultFrame(format: LlmWireFormat, type: "malformed" | "error"): string {
  if (type === "malformed") return format === "openai" ? "data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"x\"\n\n" : "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"ind\n\n";
  return format === "openai"
    ? sse({ error: { message: "the server had an error while processing your request", type: "server_error" } })
    : sse({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }, "error");
}

function startStream(res: http.ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
}

/** Writes `text`, waiting for the socket to drain when its buffer is full. */
async function write(res: http.ServerResponse, text: string): Promise<void> {
  if (!res.write(text)) await Promise.race([once(res, "drain"), once(res, "close")]);
}

async function sendFrames(res: http.ServerResponse, frames: Frames, fault: StreamFault | undefined, format: LlmWireFormat): Promise<void> {
  startStream(res);
  for (let i = 0; i < frames.length; i++) {
    if (res.destroyed) return;
    await write(res, frames[i]!.join(""));
    if (fault === undefined || i !== fault.afterParts) continue;
    if (fault.type === "stall") return; // the connection stays open until the client gives up or the server closes
    if (fault.type === "cut") {
      res.end();
      return;
    }
    await write(res, faultFrame(format, fault.type));
    res.end();
    return;
  }
  res.end();
}

/** A generated text reply paced at a fixed time to first token and token rate (token i due at ttft + i/rate). */
async function sendBenchmark(res: http.ServerResponse, format: LlmWireFormat, body: Record<string, unknown>, bench: BenchmarkReply): Promise<void> {
  const pieces = Array.from({ length: bench.tokens }, () => bench.token ?? "tok ");
  const reply: ScriptedReply = { kind: "reply", text: pieces, usage: { inputTokens: 10, outputTokens: bench.tokens } };
  const frames = format === "openai" ? openaiFrames(reply, body, 0) : anthropicFrames(reply, body, 0);
  const start = performance.now();
  startStream(res);
  await write(res, frames[0]!.join(""));
  let next = 1;
  while (next < frames.length) {
    if (res.destroyed) return;
    const now = performance.now() - start;
    let batch = "";
    // Everything due by now goes in one write: pacing by schedule, not by timer count, keeps the rate exact.
    while (next < frames.length && dueAt(next, frames.length, bench) <= now) batch += frames[next++]!.join("");
    if (batch !== "") await write(res, batch);
    if (next < frames.length) await sleep(Math.max(0, dueAt(next, frames.length, bench) - (performance.now() - start)));
  }
  res.end();
}

function dueAt(group: number, groups: number, bench: BenchmarkReply): number {
  const token = Math.min(group - 1, bench.tokens - 1); // the finish group goes with the last token
  return bench.timeToFirstTokenMs + (token * 1000) / bench.tokensPerSecond;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const [port = "0", ttft = "50", rate = "100", tokens = "200"] = process.argv.slice(2);
  const server = await startLlmServer(Number(port));
  server.benchmark({ timeToFirstTokenMs: Number(ttft), tokensPerSecond: Number(rate), tokens: Number(tokens) });
  process.stdout.write(`${JSON.stringify({ url: server.url, openai: server.baseUrl("openai"), anthropic: server.baseUrl("anthropic") })}\n`);
}
