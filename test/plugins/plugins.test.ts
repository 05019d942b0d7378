/**
 * The plugins service as separate processes on a real PostgreSQL and a
 * private nats-server: the marketplace, installs under concurrency and
 * tiers, revenue, and server-side plugin tools over MCP against a test MCP
 * server built with the official SDK.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { connect as connectNats } from "@nats-io/transport-node";
import postgres from "postgres";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TierChangedSchema, TierChangeSource } from "../../gen/switchyard/events/v1/events_pb.js";
import { PluginService, ToolRuntime } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { createLogger, readPlatformSettings, startProcess, type RunningProcess, type ServiceContext } from "../../platform/index.js";
import { bearer } from "../../services/auth/testing.js";
import { pluginChangeEvents, watchUserEvents } from "../../services/chat/user-events.js";
import { startTestKeys, type TestKeys } from "../gateway/support.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { startMcpServer, type TestMcpServer } from "../support/mcp-server.js";
import { spawnPlatform, type PlatformProcess } from "../support/spawn.js";

const codeOf = (err: unknown) => ConnectError.from(err).code;
const id = () => `u${randomBytes(6).toString("hex")}`;

let keys: TestKeys;
let nats: OwnNats;
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let sql: postgres.Sql;
let mcp: TestMcpServer;
let plugins: PlatformProcess;
let billing: { proc: RunningProcess; ctx: ServiceContext };
let service: Client<typeof PluginService>;
let release: () => void = () => undefined;

const client = (token: string) => createClient(PluginService, createGrpcTransport({ baseUrl: plugins.baseUrl, interceptors: [bearer(token)] }));
const asUser = async (userId: string, tier = "free") => client(await keys.mint(userId, { tier }));

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  [keys, nats, db] = await Promise.all([startTestKeys(), startNats(), createTestDatabase("sy_plugins")]);
  sql = postgres(db.url, { max: 2, onnotice: () => {} });
  const gate = new Promise<void>((r) => (release = r));
  mcp = await startMcpServer({
    echo: { description: "Echoes its text.", run: (args) => ({ text: `echo: ${String(args.text)}`, structured: { echoed: args.text } }) },
    fail: { description: "Always fails.", run: () => ({ text: "the widget is broken", isError: true }) },
    slow: { description: "Waits until released.", run: async () => (await gate, { text: "late" }) },
  });
  plugins = await spawnPlatform({
    env: {
      SERVICES: "plugins",
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      DATABASE_URL: db.url,
      NATS_URL: nats.url,
      AUTH_JWKS_URL: keys.jwksUrl,
      RATE_LIMIT_ENABLED: "false",
      PLUGINS_ALLOWED_HOSTS: "127.0.0.1",
      PLUGINS_TOOL_TIMEOUT_MS: "1500",
    },
  });
  // Billing's stand-in: publishes TierChanged through the outbox of the same database, as billing does.
  let ctx!: ServiceContext;
  const proc = await startProcess(
    [{ name: "billingstandin", summary: "publishes tier changes", serves: [], uses: ["events"], start: (c) => ((ctx = c), { services: [] }) }],
    readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", DATABASE_URL: db.url, NATS_URL: nats.url, RATE_LIMIT_ENABLED: "false", AUTH_JWKS_URL: keys.jwksUrl }),
    createLogger("silent"),
  );
  billing = { proc, ctx };
  service = client(await keys.mint("service:catalog", { roles: ["service"] }));
});

after(async () => {
  release();
  await plugins?.stop();
  await billing?.proc.stop();
  await mcp?.close();
  await sql?.end();
  await db?.drop();
  await nats?.kill();
  await keys?.close();
});

const changeTier = (userId: string, oldTier: Tier, newTier: Tier) =>
  billing.ctx.db.tx((tx) =>
    billing.ctx.events.publish(tx, TierChangedSchema, create(TierChangedSchema, { userId, oldTier, newTier, source: TierChangeSource.CHECKOUT, occurTime: timestampFromDate(new Date()) })),
  );

async function upsertMcpPlugin(pluginId: string, over: Record<string, unknown> = {}) {
  return service.upsertPlugin({
    pluginId,
    displayName: `MCP ${pluginId}`,
    description: "Server-side tools for tests",
    category: "testing",
    publisher: "Test Corp",
    version: "1.0.0",
    minTier: Tier.FREE,
    tools: ["echo", "fail", "slow"].map((name) => ({ name, description: name, inputSchema: { type: "object" }, runtime: ToolRuntime.SERVER, annotations: { readOnlyHint: true } })),
    mcpEndpoint: mcp.url,
    ...over,
  });
}

describe("the marketplace", () => {
  test("the seeded catalog lists, filters, searches and pages with tokens bound to their query", async () => {
    const user = await asUser(id());
    const all = await user.listPlugins({});
    assert.ok(all.plugins.some((p) => p.pluginId === "files-pro" && p.minTier === Tier.PRO && p.priceMinorUnits === 499n && p.toolSpecs.length === 2));
    const productivity = await user.listPlugins({ category: "productivity" });
    assert.ok(productivity.plugins.length >= 2 && productivity.plugins.every((p) => p.category === "productivity"));
    const search = await user.listPlugins({ query: "CLIPBOARD device" });
    assert.deepEqual(search.plugins.map((p) => p.pluginId), ["clipboard"]);
    const first = await user.listPlugins({ pageSize: 1 });
    assert.equal(first.plugins.length, 1);
    assert.notEqual(first.nextPageToken, "");
    const second = await user.listPlugins({ pageSize: 1, pageToken: first.nextPageToken });
    assert.notEqual(second.plugins[0]!.pluginId, first.plugins[0]!.pluginId);
    await assert.rejects(user.listPlugins({ pageSize: 1, category: "utilities", pageToken: first.nextPageToken }), (e) => codeOf(e) === Code.InvalidArgument);
    await assert.rejects((await asUser(id())).listPlugins({ pageSize: 1, pageToken: first.nextPageToken }), (e) => codeOf(e) === Code.InvalidArgument, "another user's token");
  });

  test("GetPlugin says whether the caller has it installed", async () => {
    const userId = id();
    const user = await asUser(userId);
    assert.equal((await user.getPlugin({ name: "plugins/clipboard" })).plugin!.installed, false);
    await user.install({ pluginId: "clipboard" });
    assert.equal((await user.getPlugin({ name: "plugins/clipboard" })).plugin!.installed, true);
    assert.equal((await user.listPlugins({ installedOnly: true })).plugins.map((p) => p.pluginId).join(), "clipboard");
  });
});

describe("installs", () => {
  test("two concurrent installs by one user with different idempotency keys: one installation, install_count up by one", async () => {
    const userId = id();
    const user = await asUser(userId);
    const [before] = await sql<{ n: string }[]>`select install_count::text as n from plugins.plugins where id = 'calendar'`;
    const results = await Promise.allSettled([user.install({ pluginId: "calendar", idempotencyKey: "k1" }), user.install({ pluginId: "calendar", idempotencyKey: "k2" })]);
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    const refused = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    assert.equal(codeOf(refused.reason), Code.AlreadyExists);
    const [after] = await sql<{ n: string }[]>`select install_count::text as n from plugins.plugins where id = 'calendar'`;
    assert.equal(BigInt(after!.n) - BigInt(before!.n), 1n);
    const [{ rows }] = (await sql`select count(*)::int as rows from plugins.installations where user_id = ${userId}`) as unknown as [{ rows: number }];
    assert.equal(rows, 1);
  });

  test("a retry with the same idempotency key returns the first installation; the key for another plugin is refused", async () => {
    const user = await asUser(id());
    const first = await user.install({ pluginId: "clipboard", idempotencyKey: "same" });
    const again = await user.install({ pluginId: "clipboard", idempotencyKey: "same" });
    assert.equal(again.installation!.name, first.installation!.name);
    await assert.rejects(user.install({ pluginId: "calendar", idempotencyKey: "same" }), (e) => codeOf(e) === Code.AlreadyExists);
    await assert.rejects(user.install({ pluginId: "clipboard" }), (e) => codeOf(e) === Code.AlreadyExists);
  });

  test("a free user installing a pro plugin is FAILED_PRECONDITION naming the tier; after TierChanged to pro it installs; falling back suspends it", async () => {
    const userId = id();
    const user = await asUser(userId, "free");
    await assert.rejects(user.install({ pluginId: "files-pro" }), (e) => codeOf(e) === Code.FailedPrecondition && /pro tier/.test(ConnectError.from(e).rawMessage));
    await changeTier(userId, Tier.FREE, Tier.PRO);
    const installed = await until("the tier change to reach plugins", async () => {
      try {
        return await user.install({ pluginId: "files-pro" });
      } catch (err) {
        if (codeOf(err) === Code.FailedPrecondition) return undefined;
        throw err;
      }
    });
    assert.equal(installed.installation!.pluginId, "files-pro");
    const tools = async () => (await service.listInstalledTools({ userId })).tools.map((t) => t.tool!.name);
    assert.deepEqual(await tools(), ["files.search", "files.delete"]);
    await changeTier(userId, Tier.PRO, Tier.FREE);
    await until("the plugin to be suspended", async () => ((await tools()).length === 0 ? true : undefined));
    assert.equal((await user.getPlugin({ name: "plugins/files-pro" })).plugin!.suspended, true);
  });

  test("revenue events sum exactly to the prices of the paid installs, split without drift", async () => {
    const pluginId = `paid${randomBytes(3).toString("hex")}`;
    await service.upsertPlugin({ pluginId, displayName: "Paid", category: "testing", publisher: "Pub", version: "1.0.0", priceMinorUnits: 333n, currencyCode: "EUR", tools: [] });
    const n = 7;
    for (let i = 0; i < n; i++) await (await asUser(id())).install({ pluginId });
    const [sum] = await sql<{ installs: number; price: string; publisher: string; platform: string }[]>`
      select count(*)::int as installs, sum(price_minor_units)::text as price, sum(publisher_minor_units)::text as publisher, sum(platform_minor_units)::text as platform
      from plugins.revenue_events where plugin_id = ${pluginId}`;
    assert.equal(sum!.installs, n);
    assert.equal(BigInt(sum!.price), 333n * BigInt(n));
    assert.equal(BigInt(sum!.publisher) + BigInt(sum!.platform), BigInt(sum!.price));
    assert.equal(BigInt(sum!.publisher), 233n * BigInt(n), "70% of 333, rounded down per install");
  });
});

describe("server-side plugin tools over MCP", () => {
  test("a call reaches the MCP server once per call id; its result and structured content come back", async () => {
    const userId = id();
    await upsertMcpPlugin("mcp-echo");
    await (await asUser(userId)).install({ pluginId: "mcp-echo" });
    const listed = (await service.listInstalledTools({ userId })).tools.filter((t) => t.pluginId === "mcp-echo").map((t) => t.tool!.name);
    assert.deepEqual(listed.sort(), ["echo", "fail", "slow"]);
    const callId = randomUUID();
    const before = mcp.calls.length;
    const first = await service.callPluginTool({ userId, pluginId: "mcp-echo", toolName: "echo", callId, argumentsJson: '{"text":"hi"}' });
    assert.deepEqual([first.content, first.isError, JSON.parse(first.structuredJson)], ["echo: hi", false, { echoed: "hi" }]);
    const again = await service.callPluginTool({ userId, pluginId: "mcp-echo", toolName: "echo", callId, argumentsJson: '{"text":"hi"}' });
    assert.equal(again.content, "echo: hi");
    assert.equal(mcp.calls.length - before, 1, "the MCP server received exactly one call");
  });

  test("isError, a server slow past the timeout and a server that is down each come back as a tool error; nothing hangs", async () => {
    const userId = id();
    await upsertMcpPlugin("mcp-faults");
    await (await asUser(userId)).install({ pluginId: "mcp-faults" });
    const call = (toolName: string, timeoutMs = 0) => service.callPluginTool({ userId, pluginId: "mcp-faults", toolName, callId: randomUUID(), argumentsJson: "{}", timeoutMs });
    const failed = await call("fail");
    assert.deepEqual([failed.isError, failed.content], [true, "the widget is broken"]);
    const slow = await call("slow", 300);
    assert.equal(slow.isError, true);
    assert.match(slow.content, /did not answer within 300 ms/);
    const down = await startMcpServer({});
    await down.close();
    await upsertMcpPlugin("mcp-down", { mcpEndpoint: down.url });
    await (await asUser(userId)).install({ pluginId: "mcp-down" });
    const unreachable = await service.callPluginTool({ userId, pluginId: "mcp-down", toolName: "echo", callId: randomUUID(), argumentsJson: "{}" });
    assert.equal(unreachable.isError, true);
    assert.match(unreachable.content, /could not be reached/);
  });

  test("an endpoint outside PLUGINS_ALLOWED_HOSTS is refused at upsert and nothing is written", async () => {
    await assert.rejects(upsertMcpPlugin("mcp-evil", { mcpEndpoint: "http://evil.example.com/mcp" }), (e) => codeOf(e) === Code.InvalidArgument && /PLUGINS_ALLOWED_HOSTS/.test(ConnectError.from(e).rawMessage));
    assert.equal((await sql`select 1 from plugins.plugins where id = 'mcp-evil'`).length, 0);
  });
});

describe("installs under races", () => {
  test("two concurrent installs with the same idempotency key both answer the one installation; install_count up by one", async () => {
    const userId = id();
    const user = await asUser(userId);
    const count = async () => BigInt((await sql<{ n: string }[]>`select install_count::text as n from plugins.plugins where id = 'clipboard'`)[0]!.n);
    const before = await count();
    const [a, b] = await Promise.all([user.install({ pluginId: "clipboard", idempotencyKey: "twice" }), user.install({ pluginId: "clipboard", idempotencyKey: "twice" })]);
    assert.equal(a.installation!.name, b.installation!.name);
    assert.equal((await count()) - before, 1n);
  });
});

describe("the tier's install limit", () => {
  test("six concurrent installs of six plugins by a free user: five installed, one RESOURCE_EXHAUSTED", async () => {
    const ids = Array.from({ length: 6 }, (_, i) => `limit${i}${randomBytes(2).toString("hex")}`);
    for (const pluginId of ids) await service.upsertPlugin({ pluginId, displayName: pluginId, category: "testing", publisher: "Pub", version: "1.0.0", tools: [] });
    const userId = id();
    const user = await asUser(userId, "free");
    const results = await Promise.allSettled(ids.map((pluginId) => user.install({ pluginId })));
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 5);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.deepEqual(refused.map((r) => codeOf(r.reason)), [Code.ResourceExhausted]);
    assert.match(ConnectError.from(refused[0]!.reason).rawMessage, /free tier allows 5/);
    assert.equal((await sql`select 1 from plugins.installations where user_id = ${userId}`).length, 5);
  });
});

describe("retries", () => {
  test("a late retry of an install whose plugin was uninstalled since does not install or charge again", async () => {
    const pluginId = `retry${randomBytes(3).toString("hex")}`;
    await service.upsertPlugin({ pluginId, displayName: "Paid retry", category: "testing", publisher: "Pub", version: "1.0.0", priceMinorUnits: 100n, currencyCode: "EUR", tools: [] });
    const userId = id();
    const user = await asUser(userId);
    await user.install({ pluginId, idempotencyKey: "once" });
    await user.uninstall({ pluginId });
    await assert.rejects(user.install({ pluginId, idempotencyKey: "once" }), (e) => codeOf(e) === Code.AlreadyExists && /new key/.test(ConnectError.from(e).rawMessage));
    assert.equal((await sql`select 1 from plugins.installations where user_id = ${userId}`).length, 0);
    assert.equal((await sql`select 1 from plugins.revenue_events where user_id = ${userId}`).length, 1);
    await user.install({ pluginId, idempotencyKey: "twice" });
    assert.equal((await sql`select 1 from plugins.revenue_events where user_id = ${userId}`).length, 2, "a new key is a new (paid) install");
  });

  test("a repeated call id while the first call runs waits for its outcome; the MCP server runs it once", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const held = await startMcpServer({ echo: { description: "Waits for the gate.", run: async (args) => (await gate, { text: `echo: ${String(args.text)}` }) } });
    try {
      const userId = id();
      await upsertMcpPlugin("mcp-held", { mcpEndpoint: held.url, tools: [{ name: "echo", description: "echo", inputSchema: { type: "object" }, runtime: ToolRuntime.SERVER }] });
      await (await asUser(userId)).install({ pluginId: "mcp-held" });
      const callId = randomUUID();
      const call = (timeoutMs = 10_000) => service.callPluginTool({ userId, pluginId: "mcp-held", toolName: "echo", callId, argumentsJson: '{"text":"once"}', timeoutMs });
      const first = call();
      await until("the first call to reach the server", async () => (held.calls.length === 1 ? true : undefined));
      // A repeat that gives up before the first finishes says so (not "unknown": the first may still answer).
      const impatient = await call(200);
      assert.equal(impatient.isError, true);
      assert.match(impatient.content, /still running/);
      const repeat = call();
      release();
      const [a, b] = await Promise.all([first, repeat]);
      assert.deepEqual([a.content, a.isError, b.content, b.isError], ["echo: once", false, "echo: once", false]);
      assert.equal(held.calls.length, 1);
    } finally {
      release();
      await held.close();
    }
  });
});

describe("chat's view of plugin changes", () => {
  test("every chat instance hears installs and uninstalls (watchUserEvents over NATS)", async () => {
    const nc = await connectNats({ servers: nats.url });
    const heard: string[] = [];
    const stop = watchUserEvents(nc, pluginChangeEvents, (userId) => heard.push(userId), createLogger("silent"));
    try {
      await nc.flush();
      const userId = id();
      const user = await asUser(userId);
      await user.install({ pluginId: "clipboard" });
      await until("the install to be heard", async () => (heard.includes(userId) ? true : undefined));
      heard.length = 0;
      await user.uninstall({ pluginId: "clipboard" });
      await until("the uninstall to be heard", async () => (heard.includes(userId) ? true : undefined));
    } finally {
      await stop();
      await nc.close();
    }
  });
});

describe("MCP failure modes", () => {
  /** A server that takes requests and never answers them. */
  async function silentServer() {
    const held: http.ServerResponse[] = [];
    const server = http.createServer((_req, res) => void held.push(res));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`,
      close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
    };
  }

  test("a server that never answers the MCP handshake is a tool error within the call's timeout", async () => {
    const silent = await silentServer();
    try {
      const userId = id();
      await upsertMcpPlugin("mcp-silent", { mcpEndpoint: silent.url });
      await (await asUser(userId)).install({ pluginId: "mcp-silent" });
      const callId = randomUUID();
      // The RPC's own deadline is far below the SDK's 60 s request timeout: a hang fails here as DEADLINE_EXCEEDED.
      const res = await service.callPluginTool({ userId, pluginId: "mcp-silent", toolName: "echo", callId, argumentsJson: "{}", timeoutMs: 300 }, { timeoutMs: 10_000 });
      assert.equal(res.isError, true);
      assert.match(res.content, /did not answer within 300 ms/);
    } finally {
      await silent.close();
    }
  });

  test("one call timing out does not fail other calls in flight to the same server", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const shared = await startMcpServer({
      echo: { description: "Waits for the gate, then echoes.", run: async (args) => (await gate, { text: `echo: ${String(args.text)}` }) },
      slow: { description: "Never answers in time.", run: (_args, signal) => new Promise((r) => signal.addEventListener("abort", () => r({ text: "aborted" }))) },
    });
    try {
      const userId = id();
      await upsertMcpPlugin("mcp-shared", { mcpEndpoint: shared.url });
      await (await asUser(userId)).install({ pluginId: "mcp-shared" });
      const call = (toolName: string, timeoutMs: number) =>
        service.callPluginTool({ userId, pluginId: "mcp-shared", toolName, callId: randomUUID(), argumentsJson: '{"text":"still here"}', timeoutMs });
      const waiting = call("echo", 10_000);
      await until("the echo call to reach the server", async () => (shared.calls.some((c) => c.tool === "echo") ? true : undefined));
      const timedOut = await call("slow", 300);
      assert.equal(timedOut.isError, true);
      release();
      const answered = await waiting;
      assert.deepEqual([answered.isError, answered.content], [false, "echo: still here"]);
    } finally {
      release();
      await shared.close();
    }
  });

  test("an endpoint whose host left PLUGINS_ALLOWED_HOSTS is refused at call time: a tool error, no request, nothing written", async () => {
    const userId = id();
    await upsertMcpPlugin("mcp-moved");
    await (await asUser(userId)).install({ pluginId: "mcp-moved" });
    // As if the operator had removed the plugin's host from the list after it was listed.
    await sql`update plugins.plugins set mcp_endpoint = 'http://evil.example.com/mcp' where id = 'mcp-moved'`;
    const before = mcp.calls.length;
    const callId = randomUUID();
    const res = await service.callPluginTool({ userId, pluginId: "mcp-moved", toolName: "echo", callId, argumentsJson: "{}" });
    assert.equal(res.isError, true);
    assert.match(res.content, /PLUGINS_ALLOWED_HOSTS/);
    assert.equal(mcp.calls.length, before);
    assert.equal((await sql`select 1 from plugins.tool_calls where user_id = ${userId} and call_id = ${callId}`).length, 0);
  });
});

describe("bad input", () => {
  test("each answers its code and writes nothing", async () => {
    const userId = id();
    const user = await asUser(userId);
    const expect = async (p: Promise<unknown>, code: Code, why: string) => assert.rejects(p, (e) => codeOf(e) === code, why);
    await expect(user.install({ pluginId: "no-such-plugin" }), Code.NotFound, "unknown plugin id");
    await expect(user.getPlugin({ name: "plugins/../etc" }), Code.InvalidArgument, "a name with ../");
    await expect(user.getPlugin({ name: "plugins/no-such" }), Code.NotFound, "unknown plugin");
    await expect(user.listPlugins({ query: "x".repeat(201) }), Code.InvalidArgument, "a 201-character query");
    await expect(user.listPlugins({ category: "Productivity" }), Code.InvalidArgument, "upper-case category");
    await expect(user.upsertPlugin({ pluginId: "mine", displayName: "Mine", category: "testing", publisher: "me", version: "1.0.0" }), Code.PermissionDenied, "a user calling UpsertPlugin");
    await expect(service.install({ pluginId: "clipboard" }), Code.PermissionDenied, "a service installing for itself");
    await expect(service.callPluginTool({ userId, pluginId: "clipboard", toolName: "clipboard.read", callId: randomUUID(), argumentsJson: "[1]" }), Code.InvalidArgument, "arguments not an object");
    await expect(service.callPluginTool({ userId, pluginId: "clipboard", toolName: "clipboard.read", callId: randomUUID(), argumentsJson: "{}" }), Code.NotFound, "not installed");
    assert.equal((await sql`select 1 from plugins.installations where user_id = ${userId}`).length, 0);
    assert.equal((await sql`select 1 from plugins.plugins where id = 'mine'`).length, 0);
  });
});
