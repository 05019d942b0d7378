/**
 * Agents use installed plugins, across processes: a chat instance
 * (SERVICES=chat) and a gateway + plugins process on a real PostgreSQL and a
 * private nats-server, the local model server reached through the real
 * `openai` SDK, and a test MCP server built with the official SDK. A user
 * installs a plugin with server-side MCP tools; the scripted model calls
 * them in a chat turn.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import { PluginService, ToolRuntime } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { providerSafeToolNames } from "../../services/chat/model/index.js";
import { bearer } from "../../services/auth/testing.js";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { newPrefix, newUser, startTestKeys, type TestKeys } from "../gateway/support.js";
import { chatClients, kinds, readAll, startChat, type ChatProcess } from "../chat/support.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { startLlmServer, textReply, toolCallReply, type LlmServer } from "../support/llm-server.js";
import { startMcpServer, type TestMcpServer } from "../support/mcp-server.js";
import { spawnPlatform, type PlatformProcess } from "../support/spawn.js";

let keys: TestKeys;
let nats: OwnNats;
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let llm: LlmServer;
let mcp: TestMcpServer;
let back: PlatformProcess;
let chat: ChatProcess;

const safe = (name: string) => providerSafeToolNames([name]).get(name)!;

before(async () => {
  [keys, nats, db, llm] = await Promise.all([startTestKeys(), startNats(), createTestDatabase("sy_chat_plugins"), startLlmServer()]);
  mcp = await startMcpServer({
    echo: { description: "Echoes its text.", run: (args) => ({ text: `echo: ${String(args.text)}` }) },
    fail: { description: "Always fails.", run: () => ({ text: "the widget is broken", isError: true }) },
  });
  const common = { DATABASE_URL: db.url, NATS_URL: nats.url, AUTH_JWKS_URL: keys.jwksUrl, RATE_LIMIT_ENABLED: "false", LOG_LEVEL: "warn", HOST: "127.0.0.1" };
  back = await spawnPlatform({ timeoutMs: 90_000, env: { ...common, SERVICES: "gateway,plugins", GATEWAY_NATS_PREFIX: newPrefix(), PLUGINS_ALLOWED_HOSTS: "127.0.0.1" } });
  chat = await startChat(keys, back.baseUrl, { ...common, PLUGINS_URL: back.baseUrl, CHAT_TOOL_TIMEOUT_MS: "5000", ...llm.env("openai") });
  const service = createClient(PluginService, createGrpcTransport({ baseUrl: back.baseUrl, interceptors: [bearer(await keys.mint("service:catalog", { roles: ["service"] }))] }));
  await service.upsertPlugin({
    pluginId: "mcp-tools",
    displayName: "MCP tools",
    category: "testing",
    publisher: "Test Corp",
    version: "1.0.0",
    minTier: Tier.FREE,
    tools: ["echo", "fail"].map((name) => ({ name, description: `the ${name} tool`, inputSchema: { type: "object", properties: { text: { type: "string" } } }, runtime: ToolRuntime.SERVER, annotations: { readOnlyHint: true } })),
    mcpEndpoint: mcp.url,
  });
});

after(async () => {
  await chat?.stop();
  await back?.stop();
  await mcp?.close();
  await llm?.close();
  await db?.drop();
  await nats?.kill();
  await keys?.close();
});

async function userWithPlugin() {
  const userId = newUser();
  const token = await keys.mint(userId, { tier: "free" });
  await createClient(PluginService, createGrpcTransport({ baseUrl: back.baseUrl, interceptors: [bearer(token)] })).install({ pluginId: "mcp-tools" });
  return chatClients(chat.baseUrl, token);
}

test("the model calls an installed plugin's MCP tool in a chat turn: the server receives exactly one call; its result reaches the model and the stream", async () => {
  const client = await userWithPlugin();
  const base = llm.requests.length;
  const calls = mcp.calls.length;
  llm.script(toolCallReply([{ name: safe("echo"), argumentFragments: ['{"text":', '"hi"}'] }]), textReply("It said hi."));
  const turn = await readAll(client.chat.chat({ message: "say hi through the plugin" }));
  assert.equal(turn.error, undefined, turn.error?.message);
  assert.deepEqual(kinds(turn.events), ["started", "toolCallStarted", "toolCallFinished", "textDelta", "done"]);
  const finished = turn.events[2]!.event;
  assert.equal(finished.case, "toolCallFinished");
  assert.deepEqual(finished.value.outcome, { case: "result", value: { content: "echo: hi" } });
  assert.deepEqual(mcp.calls.slice(calls), [{ tool: "echo", args: { text: "hi" } }], "the MCP server received exactly one call");
  assert.ok(JSON.stringify(llm.requests[base]!.body).includes(safe("echo")), "the plugin's tool was offered to the model");
  assert.ok(JSON.stringify(llm.requests[base + 1]!.body).includes("echo: hi"), "the model received the result");
});

test("an MCP tool answering isError: the model receives a tool error; the turn ends normally", async () => {
  const client = await userWithPlugin();
  const base = llm.requests.length;
  llm.script(toolCallReply([{ name: safe("fail"), argumentFragments: ["{}"] }]), textReply("The plugin failed."));
  const turn = await readAll(client.chat.chat({ message: "try the failing tool" }));
  assert.equal(turn.error, undefined, turn.error?.message);
  const finished = turn.events.find((e) => e.event.case === "toolCallFinished")!.event;
  assert.deepEqual(finished.case === "toolCallFinished" && finished.value.outcome, { case: "error", value: { $typeName: "switchyard.device.v1.ToolError", code: ToolErrorCode.FAILED, message: "the widget is broken" } });
  assert.ok(JSON.stringify(llm.requests[base + 1]!.body).includes("the widget is broken"), "the model received the error");
});
