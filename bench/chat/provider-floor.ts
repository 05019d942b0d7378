/**
 * The floor for bench/chat: a client reading the provider's SSE directly
 * (fetch + a minimal SSE parse, no SDK, no gRPC), so the chat figures (time to
 * first TextDelta, tokens per second delivered) can be printed beside what the
 * provider itself gives, measured in the same run.
 *
 * Against test/support/llm-server.ts in benchmark mode (a fixed time to first
 * token and token rate) the floor shows the pacing plus the cost of one HTTP
 * stream; whatever chat adds is the difference.
 *
 *   node --import tsx bench/chat/provider-floor.ts [--turns 64] [--ttft 50] [--rate 200] [--tokens 100]
 */
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import type { LlmWireFormat } from "../../test/support/llm-server.js";
import { spawnScript } from "../../test/support/spawn.js";

/** What to measure. */
export interface ProviderFloorOptions {
  /** LLM_BASE_URL as the SDK would get it (the server's baseUrl(format)). */
  readonly baseUrl: string;
  readonly format: LlmWireFormat;
  /** Turns in all, `concurrency` at a time. */
  readonly turns: number;
  readonly concurrency: number;
  readonly model?: string;
  readonly maxOutputTokens?: number;
}

/** One turn as the client saw it. */
export interface FloorTurn {
  /** From sending the request to the first text delta, ms. */
  readonly timeToFirstTokenMs: number;
  /** Text deltas received. */
  readonly tokens: number;
  /** From the first to the last text delta, ms. */
  readonly streamMs: number;
}

/** The floor's figures. */
export interface ProviderFloorResult {
  readonly format: LlmWireFormat;
  readonly concurrency: number;
  readonly turns: FloorTurn[];
  readonly timeToFirstTokenP50Ms: number;
  readonly timeToFirstTokenP90Ms: number;
  /** Per turn, (tokens - 1) / streamMs: the rate one reader sees. */
  readonly tokensPerSecondP50: number;
  /** All tokens over the wall time of the whole run. */
  readonly aggregateTokensPerSecond: number;
}

/** Reads `turns` streams from the provider directly, `concurrency` at a time. */
export async function measureProviderFloor(options: ProviderFloorOptions): Promise<ProviderFloorResult> {
  // Warm-up, one round at the measured concurrency: first connections and JIT are not the floor.
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.turns) }, () => readOneTurn(options)));
  const results: FloorTurn[] = [];
  let next = 0;
  const start = performance.now();
  const worker = async () => {
    while (next < options.turns) {
      next++;
      results.push(await readOneTurn(options));
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.turns) }, worker));
  const wallMs = performance.now() - start;
  const ttfts = results.map((t) => t.timeToFirstTokenMs);
  const rates = results.filter((t) => t.tokens > 1 && t.streamMs > 0).map((t) => ((t.tokens - 1) * 1000) / t.streamMs);
  const tokens = results.reduce((n, t) => n + t.tokens, 0);
  return {
    format: options.format,
    concurrency: options.concurrency,
    turns: results,
    timeToFirstTokenP50Ms: percentile(ttfts, 0.5),
    timeToFirstTokenP90Ms: percentile(ttfts, 0.9),
    tokensPerSecondP50: percentile(rates, 0.5),
    aggregateTokensPerSecond: (tokens * 1000) / wallMs,
  };
}

/** The request each provider expects, at its endpoint. */
function providerRequest(options: ProviderFloorOptions): { url: string; headers: Record<string, string>; body: unknown } {
  const model = options.model ?? "bench-model";
  const maxTokens = options.maxOutputTokens ?? 4096;
  const messages = [{ role: "user", content: "go" }];
  if (options.format === "openai") {
    return {
      url: `${options.baseUrl}/chat/completions`,
      headers: { authorization: "Bearer bench-key" },
      body: { model, messages, max_completion_tokens: maxTokens, stream: true, stream_options: { include_usage: true } },
    };
  }
  return {
    url: `${options.baseUrl}/v1/messages`,
    headers: { "x-api-key": "bench-key", "anthropic-version": "2023-06-01" },
    body: { model, messages, max_tokens: maxTokens, stream: true },
  };
}

async function readOneTurn(options: ProviderFloorOptions): Promise<FloorTurn> {
  const { url, headers, body } = providerRequest(options);
  const sent = performance.now();
  const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  if (!response.ok || response.body === null) throw new Error(`provider answered HTTP ${response.status}`);
  let first = 0;
  let last = 0;
  let tokens = 0;
  let buffered = "";
  const decoder = new TextDecoder();
  const reader = response.body.getReader();
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    buffered += decoder.decode(chunk.value, { stream: true });
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const frame = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      if (!isTextDelta(frame, options.format)) continue;
      last = performance.now();
      if (tokens === 0) first = last;
      tokens++;
    }
  }
  return { timeToFirstTokenMs: first - sent, tokens, streamMs: last - first };
}

/** Whether one SSE frame carries a text delta (parsed as JSON, as any client must). */
function isTextDelta(frame: string, format: LlmWireFormat): boolean {
  const data = frame.split("\n").find((line) => line.startsWith("data: "))?.slice(6);
  if (data === undefined || data === "[DONE]") return false;
  const event = JSON.parse(data) as {
    type?: string;
    delta?: { type?: string; text?: string };
    choices?: { delta?: { content?: string | null } }[];
  };
  if (format === "openai") return typeof event.choices?.[0]?.delta?.content === "string" && event.choices[0].delta.content !== "";
  return event.type === "content_block_delta" && event.delta?.type === "text_delta" && event.delta.text !== "";
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** One line of figures. */
export function describeFloor(result: ProviderFloorResult): string {
  return (
    `provider SSE floor (${result.format}, ${result.concurrency} at a time, ${result.turns.length} turns): ` +
    `TTFT p50 ${result.timeToFirstTokenP50Ms.toFixed(1)} ms, p90 ${result.timeToFirstTokenP90Ms.toFixed(1)} ms; ` +
    `${result.tokensPerSecondP50.toFixed(0)} tokens/s per turn p50; ${result.aggregateTokensPerSecond.toFixed(0)} tokens/s in all`
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({
    options: {
      turns: { type: "string", default: "64" },
      ttft: { type: "string", default: "50" },
      rate: { type: "string", default: "200" },
      tokens: { type: "string", default: "100" },
    },
  });
  // The provider in its own process, as in bench/chat, so its pacing does not share our event loop.
  const server = await spawnScript("test/support/llm-server.ts", {
    args: ["0", values.ttft, values.rate, values.tokens],
    ready: /"url":"http:\/\/127\.0\.0\.1:(\d+)"/,
  });
  try {
    const url = `http://127.0.0.1:${server.port}`;
    process.stdout.write(`local provider: time to first token ${values.ttft} ms, ${values.rate} tokens/s, ${values.tokens} tokens a turn\n`);
    for (const format of ["openai", "anthropic"] as const) {
      const baseUrl = format === "openai" ? `${url}/v1` : url;
      for (const concurrency of [1, 64]) {
        const turns = concurrency === 1 ? Math.min(8, Number(values.turns)) : Number(values.turns);
        process.stdout.write(`${describeFloor(await measureProviderFloor({ baseUrl, format, turns, concurrency }))}\n`);
      }
    }
  } finally {
    await server.stop();
  }
}
