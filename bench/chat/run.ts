/**
 * bench/chat: chat turns against the local provider server in benchmark
 * mode (a fixed time to first token and token rate, in its own process),
 * each figure beside a baseline measured in the same run:
 *
 * - time to first TextDelta seen by a gRPC-Web client, minus the provider's
 *   own (its SSE read directly: provider-floor.ts), at 1 and 64 turns at once;
 * - tokens per second delivered to the client against reading the SSE directly;
 * - one durable step (an event committed through the turn log, lease check
 *   included) against a bare single-row INSERT commit;
 * - a turn with three device tool calls end to end against the sum of its
 *   parts (two model calls read directly, three CallTool RPCs one after another).
 *
 *   npm run bench:chat [-- --turns 64 --ttft 50 --rate 200 --tokens 100 --steps 1000 --parts stream,step,tools]
 */
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { createGrpcWebTransport as createBrowserTransport } from "@connectrpc/connect-web";
import { create } from "@bufbuild/protobuf";
import { parseArgs } from "node:util";
import { ChatService, ChatResponseSchema } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { DeviceService } from "../../gen/switchyard/device/v1/device_pb.js";
import { createDatabase } from "../../platform/index.js";
import { providerSafeToolNames } from "../../services/chat/model/index.js";
import { createTurnHub } from "../../services/chat/turn-hub.js";
import { createTurnLog } from "../../services/chat/turn-log.js";
import { connectToolDevice, startChat, startGatewayProcess } from "../../test/chat/support.js";
import { newPrefix, newUser, startTestKeys, dropPrefix } from "../../test/gateway/support.js";
import { createTestDatabase, natsUrl } from "../../test/support/infra.js";
import { startLlmServer, textReply, toolCallReply } from "../../test/support/llm-server.js";
import { spawnScript } from "../../test/support/spawn.js";
import { processCpuMs } from "../cpu.js";
import { measureProviderFloor, type ProviderFloorResult } from "./provider-floor.js";

const { values } = parseArgs({
  options: {
    turns: { type: "string", default: "64" },
    ttft: { type: "string", default: "50" },
    rate: { type: "string", default: "200" },
    tokens: { type: "string", default: "100" },
    steps: { type: "string", default: "1000" },
    tooled: { type: "string", default: "20" },
    // Which figures to measure: stream (first TextDelta, tokens/s), step (durable step), tools (a turn with tool calls).
    parts: { type: "string", default: "stream,step,tools" },
    // Concurrency levels of the stream figures.
    concurrency: { type: "string", default: "1,64" },
  },
});

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN;
};
const out = (line: string) => process.stdout.write(`${line}\n`);

const keys = await startTestKeys();
const db = await createTestDatabase("sy_bench_chat");
const nats = await natsUrl();
const prefix = newPrefix();
const provider = await spawnScript("test/support/llm-server.ts", { args: ["0", values.ttft, values.rate, values.tokens], ready: /"url":"http:\/\/127\.0\.0\.1:(\d+)"/ });
const providerUrl = `http://127.0.0.1:${provider.port}`;
const scripted = await startLlmServer();
const gw = await startGatewayProcess({ NATS_URL: nats, AUTH_JWKS_URL: keys.jwksUrl, GATEWAY_NATS_PREFIX: prefix, GATEWAY_MAX_PENDING_CALLS_PER_USER: "1024" });
const common = { DATABASE_URL: db.url, NATS_URL: nats, DATABASE_POOL_MAX: "20" };
const chat = await startChat(keys, gw.baseUrl, { ...common, LLM_PROVIDER: "openai", LLM_BASE_URL: `${providerUrl}/v1`, LLM_API_KEY: "bench-key", LLM_MODEL: "bench-model" });
const tooledChat = await startChat(keys, gw.baseUrl, { ...common, ...scripted.env("openai") });

const withToken = (token: string): Interceptor => (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

interface ClientTurn {
  ttftMs: number;
  tokens: number;
  streamMs: number;
}

/**
 * A user's ChatService client as the browser console makes it: connect-web's
 * gRPC-Web transport over fetch (undici here), one per user, as the floor's
 * reader uses fetch too.
 */
const browserClient = (token: string) => createClient(ChatService, createBrowserTransport({ baseUrl: chat.baseUrl, interceptors: [withToken(token)] }));

/** One Chat turn over gRPC-Web, as a browser would read it. */
async function clientTurn(client: ReturnType<typeof browserClient>): Promise<ClientTurn> {
  const sent = performance.now();
  let first = 0;
  let last = 0;
  let tokens = 0;
  let firstTokens = 0;
  for await (const e of client.chat({ message: "go" })) {
    if (e.event.case !== "textDelta") continue;
    // Deltas that arrive while a commit is under way are merged: count the tokens in the text.
    const n = e.event.value.text.split("tok ").length - 1;
    last = performance.now();
    if (tokens === 0) (first = last), (firstTokens = n);
    tokens += n;
  }
  // Like the floor's (tokens - 1) / time: the tokens after the first arrival, over the time after it.
  return { ttftMs: first - sent, tokens: tokens - firstTokens + 1, streamMs: last - first };
}

/** CPU µs per delivered token of each process taking part, over `run`. */
async function cpuPerToken<T>(pids: Record<string, number>, tokens: number, run: () => Promise<T>): Promise<{ result: T; cpuUsPerToken: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuMs(pid)]));
  const result = await run();
  const cpuUsPerToken = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, ((processCpuMs(pid) - before[k]!) * 1000) / tokens]));
  return { result, cpuUsPerToken };
}

const cpuLine = (cpu: Record<string, number>) => Object.entries(cpu).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ");

async function chatRound(concurrency: number, turns: number): Promise<{ ttftP50: number; rateP50: number; aggregate: number }> {
  // Each worker is its own user (a user's turns at once are limited by tier).
  const clients = (await Promise.all(Array.from({ length: concurrency }, () => keys.mint(newUser(), { tier: "team" })))).map(browserClient);
  // Warm-up, one turn of each user at once: a warm process, connections and per-user caches, like the floor's.
  await Promise.all(clients.map(clientTurn));
  const results: ClientTurn[] = [];
  let next = 0;
  const start = performance.now();
  await Promise.all(
    clients.map(async (c) => {
      while (next < turns) {
        next++;
        results.push(await clientTurn(c));
      }
    }),
  );
  const wall = performance.now() - start;
  const rates = results.filter((r) => r.tokens > 1).map((r) => ((r.tokens - 1) * 1000) / r.streamMs);
  const delivered = results.length * Number(values.tokens);
  return { ttftP50: percentile(results.map((r) => r.ttftMs), 0.5), rateP50: percentile(rates, 0.5), aggregate: (delivered * 1000) / wall };
}

function streamingFigures(concurrency: number, floor: ProviderFloorResult, c: Awaited<ReturnType<typeof chatRound>>, floorCpu: Record<string, number>, chatCpu: Record<string, number>): void {
  out(
    `${concurrency} at a time: time to first TextDelta p50 ${c.ttftP50.toFixed(1)} ms vs provider ${floor.timeToFirstTokenP50Ms.toFixed(1)} ms ` +
      `(chat adds ${(c.ttftP50 - floor.timeToFirstTokenP50Ms).toFixed(1)} ms); tokens/s per turn p50 ${c.rateP50.toFixed(0)} vs ${floor.tokensPerSecondP50.toFixed(0)} ` +
      `(${(c.rateP50 / floor.tokensPerSecondP50).toFixed(2)}x); all turns ${c.aggregate.toFixed(0)} vs ${floor.aggregateTokensPerSecond.toFixed(0)} tokens/s (${(c.aggregate / floor.aggregateTokensPerSecond).toFixed(2)}x)`,
  );
  out(`  CPU µs per token: through chat: ${cpuLine(chatCpu)}; read directly: ${cpuLine(floorCpu)}`);
}

/** One durable step through the turn log against a bare INSERT commit, one at a time. */
async function durableStep(n: number): Promise<void> {
  const database = createDatabase(db.url, { max: 4 });
  const sql = database.sql;
  await sql`create table if not exists public.bench_scratch (id bigint primary key, payload bytea not null)`;
  const turnId = `bench-${Date.now()}`;
  await sql`insert into chat.conversations (id, user_id) values (${turnId}, 'bench')`;
  await sql`insert into chat.turns (id, conversation_id, user_id, tier, message, state, lease_owner, lease_until, deadline)
            values (${turnId}, ${turnId}, 'bench', 2, 'x', 'running', 'bench', now() + interval '1 hour', now() + interval '1 hour')`;
  const log = createTurnLog(database, "bench", createTurnHub(), undefined);
  const payload = Buffer.alloc(40, 1);
  const bare: number[] = [];
  const step: number[] = [];
  for (let i = 1; i <= n; i++) {
    let t = performance.now();
    await sql`insert into public.bench_scratch (id, payload) values (${i}, ${payload})`;
    bare.push(performance.now() - t);
    t = performance.now();
    await log.write({ turnId, events: [create(ChatResponseSchema, { sequence: BigInt(i), event: { case: "textDelta", value: { text: "tok tok tok tok " } } })] });
    step.push(performance.now() - t);
  }
  const b = percentile(bare, 0.5);
  const s = percentile(step, 0.5);
  out(`durable step (event committed with its lease check), one at a time, ${n} each: p50 ${s.toFixed(2)} ms, p90 ${percentile(step, 0.9).toFixed(2)} ms vs bare INSERT commit p50 ${b.toFixed(2)} ms (${(s / b).toFixed(2)}x)`);
  await database.close();
}

/** A turn with three tool calls on a device, end to end, against its parts one by one. */
async function toolTurn(rounds: number): Promise<void> {
  const user = newUser();
  const token = await keys.mint(user, { tier: "team" });
  const device = await connectToolDevice(gw.port, token, [{ name: "bench.echo" }], (call) => ({ echo: String(call.arguments?.n) }));
  const safe = providerSafeToolNames(["bench.echo"]).get("bench.echo")!;
  const client = createClient(ChatService, createGrpcWebTransport({ baseUrl: tooledChat.baseUrl, httpVersion: "1.1", interceptors: [withToken(token)] }));
  const devices = createClient(DeviceService, createGrpcTransport({ baseUrl: gw.baseUrl, interceptors: [withToken(token)] }));
  const script = () =>
    scripted.script(toolCallReply([0, 1, 2].map((n) => ({ name: safe, argumentFragments: [`{"n": ${n}}`] }))), textReply("three ", "done"));
  const endToEnd: number[] = [];
  const parts: number[] = [];
  for (let i = 0; i <= rounds; i++) {
    script();
    let t = performance.now();
    for await (const _ of client.chat({ message: "call three" }));
    const whole = performance.now() - t;
    // The parts: the same two model calls read directly, and three CallTools one after another.
    script();
    t = performance.now();
    for (let m = 0; m < 2; m++) {
      const res = await fetch(`${scripted.baseUrl("openai")}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer k" },
        body: JSON.stringify({ model: "m", stream: true, messages: [{ role: "user", content: "x" }] }),
      });
      await res.text();
    }
    for (let n = 0; n < 3; n++) await devices.callTool({ tool: "bench.echo", arguments: { n } });
    const sum = performance.now() - t;
    if (i > 0) (endToEnd.push(whole), parts.push(sum)); // round 0 warms up
  }
  device.ws.terminate();
  const e = percentile(endToEnd, 0.5);
  const p = percentile(parts, 0.5);
  out(`turn with 3 device tool calls (run at once), ${rounds} turns: end to end p50 ${e.toFixed(1)} ms vs sum of its parts p50 ${p.toFixed(1)} ms (${(e / p).toFixed(2)}x)`);
}

try {
  out(`local provider (own process): time to first token ${values.ttft} ms, ${values.rate} tokens/s, ${values.tokens} tokens a turn; chat and gateway each in their own process`);
  const parts = new Set(values.parts.split(","));
  for (const concurrency of parts.has("stream") ? values.concurrency.split(",").map(Number) : []) {
    const turns = concurrency === 1 ? 24 : Number(values.turns);
    const tokens = (turns + concurrency) * Number(values.tokens); // each side reads one warm-up round first
    const floor = await cpuPerToken({ provider: provider.child.pid!, reader: process.pid }, tokens, () =>
      measureProviderFloor({ baseUrl: `${providerUrl}/v1`, format: "openai", turns, concurrency }),
    );
    const round = await cpuPerToken({ chat: chat.child.pid!, provider: provider.child.pid!, "gRPC-Web reader": process.pid }, tokens, () => chatRound(concurrency, turns));
    streamingFigures(concurrency, floor.result, round.result, floor.cpuUsPerToken, round.cpuUsPerToken);
  }
  if (parts.has("step")) await durableStep(Number(values.steps));
  if (parts.has("tools")) await toolTurn(Number(values.tooled));
} finally {
  await Promise.all([chat.stop(), tooledChat.stop()]);
  await gw.kill();
  await provider.stop();
  await scripted.close();
  await db.drop();
  await dropPrefix(nats, prefix);
  await keys.close();
}
