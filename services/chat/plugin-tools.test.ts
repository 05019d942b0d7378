import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { test } from "node:test";
import { ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import { PluginInstalledSchema, PluginUninstalledSchema, TierChangedSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import {
  type CallPluginToolRequest,
  CallPluginToolResponseSchema,
  type InstalledTool,
  InstalledToolSchema,
  ListInstalledToolsResponseSchema,
  ToolRuntime,
} from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { eventSubject } from "../../platform/index.js";
import { pluginChangeEvents, userOfEvent } from "./user-events.js";
import { createPluginToolSource, type PluginToolsClient } from "./plugin-tools.js";
import { type AgentTool, combineToolSources, type ToolOutcome, type ToolSource } from "./tools.js";

const never = new AbortController().signal;

const installed = (pluginId: string, name: string, runtime: ToolRuntime, extra: Record<string, unknown> = {}): InstalledTool =>
  create(InstalledToolSchema, { pluginId, tool: { name, description: `${name} tool`, runtime, ...extra } });

/** A PluginService stand-in that answers from a list and records what it was asked. */
function plugins(tools: InstalledTool[], answer: (req: CallPluginToolRequest) => Promise<unknown> | unknown = () => ({ content: "ok" })) {
  const asked = { lists: 0, calls: [] as CallPluginToolRequest[], callTimeouts: [] as (number | undefined)[] };
  const client: PluginToolsClient = {
    listInstalledTools: async () => (asked.lists++, create(ListInstalledToolsResponseSchema, { tools })),
    callPluginTool: async (req, opts) => {
      asked.calls.push(req as CallPluginToolRequest);
      asked.callTimeouts.push(opts?.timeoutMs);
      return create(CallPluginToolResponseSchema, (await answer(req as CallPluginToolRequest)) as object);
    },
  };
  return { client, asked };
}

test("installed tools are listed with origin plugin:<id>, their schema and annotations; device-runtime ones only while a connected device declares them", async () => {
  const tools = [
    installed("weather", "weather.forecast", ToolRuntime.SERVER, { inputSchema: { type: "object", properties: { city: { type: "string" } } }, annotations: { readOnlyHint: true, openWorldHint: true } }),
    installed("files-pro", "files.delete", ToolRuntime.DEVICE, { annotations: { destructiveHint: true } }),
  ];
  const { client } = plugins(tools);
  const serverOnly = await createPluginToolSource({ plugins: client }).list("u1", never);
  assert.deepEqual(serverOnly, [
    {
      name: "weather.forecast",
      description: "weather.forecast tool",
      inputSchema: { type: "object", properties: { city: { type: "string" } } },
      annotations: { readOnlyHint: true, destructiveHint: false },
      origin: "plugin:weather",
    },
  ]);
  let onDevice: AgentTool[] = [];
  const device: ToolSource = { list: async () => onDevice, call: async () => ({ ok: true, content: "{}" }) };
  const source = createPluginToolSource({ plugins: client, devices: device });
  assert.deepEqual((await source.list("u1", never)).map((t) => t.name), ["weather.forecast"], "no connected device declares files.delete: the gateway could not run it");
  onDevice = [{ name: "files.delete", description: "", inputSchema: { type: "object" }, annotations: {}, origin: "device" }];
  const both = await source.list("u1", never);
  assert.deepEqual(both.map((t) => [t.name, t.origin, t.annotations.destructiveHint, t.inputSchema]), [
    ["weather.forecast", "plugin:weather", false, { type: "object", properties: { city: { type: "string" } } }],
    ["files.delete", "plugin:files-pro", true, { type: "object" }],
  ]);
  const deviceDown: ToolSource = { list: async () => Promise.reject(new Error("gateway down")), call: device.call };
  assert.deepEqual((await createPluginToolSource({ plugins: client, devices: deviceDown }).list("u1", never)).map((t) => t.name), ["weather.forecast"], "the device listing failing offers the server tools still");
});

test("two plugins naming the same tool: the first (by plugin id) is offered", async () => {
  const { client } = plugins([installed("a-plugin", "search", ToolRuntime.SERVER), installed("b-plugin", "search", ToolRuntime.SERVER)]);
  const listed = await createPluginToolSource({ plugins: client }).list("u1", never);
  assert.deepEqual(listed.map((t) => t.origin), ["plugin:a-plugin"]);
});

test("a user's listing is cached until its TTL or invalidation; a failure briefly, or for the TTL when the service does not serve it", async () => {
  let clock = 0;
  const { client, asked } = plugins([installed("weather", "weather.forecast", ToolRuntime.SERVER)]);
  const source = createPluginToolSource({ plugins: client, cacheTtlMs: 1000, now: () => clock });
  await Promise.all([source.list("u1", never), source.list("u1", never)]);
  await source.list("u1", never);
  assert.equal(asked.lists, 1, "concurrent and repeated lists share one fetch");
  await source.list("u2", never);
  assert.equal(asked.lists, 2, "per user");
  source.invalidate("u1");
  await source.list("u1", never);
  assert.equal(asked.lists, 3, "invalidated");
  clock = 1000;
  await source.list("u1", never);
  assert.equal(asked.lists, 4, "expired");

  let failure: Code | undefined = Code.Unavailable;
  let fetches = 0;
  const flaky: PluginToolsClient = {
    listInstalledTools: async () => {
      fetches++;
      if (failure !== undefined) throw new ConnectError("down", failure);
      return create(ListInstalledToolsResponseSchema, {});
    },
    callPluginTool: client.callPluginTool,
  };
  const s2 = createPluginToolSource({ plugins: flaky, cacheTtlMs: 15_000, now: () => clock });
  await assert.rejects(s2.list("u1", never), (e) => ConnectError.from(e).code === Code.Unavailable);
  failure = undefined;
  await assert.rejects(s2.list("u1", never), (e) => ConnectError.from(e).code === Code.Unavailable, "a transient failure is kept 1 s");
  assert.equal(fetches, 1);
  clock += 1000;
  assert.deepEqual(await s2.list("u1", never), [], "then asked again");

  failure = Code.Unimplemented;
  await assert.rejects(s2.list("u2", never), (e) => ConnectError.from(e).code === Code.Unimplemented);
  failure = undefined;
  clock += 14_999;
  await assert.rejects(s2.list("u2", never), (e) => ConnectError.from(e).code === Code.Unimplemented, "UNIMPLEMENTED is kept for the TTL");
  clock += 1;
  assert.deepEqual(await s2.list("u2", never), []);
  assert.equal(fetches, 4);
});

test("a turn that is cancelled stops waiting for a listing another turn shares", async () => {
  let release!: () => void;
  const slow: PluginToolsClient = {
    listInstalledTools: () => new Promise((r) => (release = () => r(create(ListInstalledToolsResponseSchema, { tools: [installed("w", "w.t", ToolRuntime.SERVER)] })))),
    callPluginTool: async () => create(CallPluginToolResponseSchema, {}),
  };
  const source = createPluginToolSource({ plugins: slow });
  const ac = new AbortController();
  const cancelled = source.list("u1", ac.signal);
  const other = source.list("u1", never);
  ac.abort(new Error("turn cancelled"));
  await assert.rejects(cancelled, /turn cancelled/);
  release();
  assert.equal((await other).length, 1, "the other turn still gets the listing");
});

test("a server tool is called through CallPluginTool with the call id, the user, the plugin and a bounded timeout", async () => {
  const { client, asked } = plugins([installed("weather", "weather.forecast", ToolRuntime.SERVER)], () => ({ content: "sunny", structuredJson: '{"sky":"clear"}' }));
  const source = createPluginToolSource({ plugins: client });
  const [tool] = await source.list("u1", never);
  const outcome = await source.call("u1", tool!, "call-1", '{"city":"Oslo"}', 500_000, never);
  assert.deepEqual(outcome, { ok: true, content: "sunny", result: { sky: "clear" } });
  const plain = createPluginToolSource({ plugins: plugins([installed("weather", "weather.forecast", ToolRuntime.SERVER)], () => ({ content: "rain" })).client });
  assert.deepEqual(await plain.call("u1", tool!, "call-2", "{}", 1000, never), { ok: true, content: "rain", result: { content: "rain" } }, "text only: the stream shows it as {content}");
  const req = asked.calls[0]!;
  assert.deepEqual([req.userId, req.pluginId, req.toolName, req.callId, req.argumentsJson, req.timeoutMs], ["u1", "weather", "weather.forecast", "call-1", '{"city":"Oslo"}', 120_000]);
  assert.equal(asked.callTimeouts[0], 122_000, "the RPC outlives the tool's own timeout so its error answer arrives");
});

test("tool errors and RPC failures come back as outcomes the model reads; a cancelled turn throws", async () => {
  const answers: Record<string, () => unknown> = {
    broken: () => ({ content: "the widget is broken", isError: true }),
    gone: () => {
      throw new ConnectError("the user has no active installation", Code.NotFound);
    },
    refused: () => {
      throw new ConnectError("arguments_json: must be a JSON object", Code.InvalidArgument);
    },
    down: () => {
      throw new ConnectError("connection refused", Code.Unavailable);
    },
  };
  const { client, asked } = plugins(
    Object.keys(answers).map((n) => installed("p", n, ToolRuntime.SERVER)),
    (req) => answers[req.toolName]!(),
  );
  const source = createPluginToolSource({ plugins: client });
  const tools = new Map((await source.list("u1", never)).map((t) => [t.name, t]));
  const call = (name: string, signal = never) => source.call("u1", tools.get(name)!, `c-${name}`, "{}", 1000, signal);
  const codeOf = (o: ToolOutcome) => (o.ok ? undefined : [o.code, o.error]);
  assert.deepEqual(codeOf(await call("broken")), [ToolErrorCode.FAILED, "the widget is broken"]);
  assert.equal(codeOf(await call("refused"))![0], ToolErrorCode.INVALID_ARGUMENTS);
  assert.equal(codeOf(await call("down"))![0], ToolErrorCode.UNAVAILABLE);
  const lists = asked.lists;
  assert.equal(codeOf(await call("gone"))![0], ToolErrorCode.UNKNOWN_TOOL);
  await source.list("u1", never);
  assert.equal(asked.lists, lists + 1, "NOT_FOUND drops the user's cached listing");
  const ac = new AbortController();
  ac.abort(new Error("cancelled"));
  await assert.rejects(call("broken", ac.signal));
});

test("a tool no longer installed is an unknown-tool outcome without a call", async () => {
  const { client, asked } = plugins([]);
  const source = createPluginToolSource({ plugins: client });
  const stale: AgentTool = { name: "weather.forecast", description: "", inputSchema: { type: "object" }, annotations: {}, origin: "plugin:weather" };
  const outcome = await source.call("u1", stale, "c1", "{}", 1000, never);
  assert.equal(outcome.ok ? undefined : outcome.code, ToolErrorCode.UNKNOWN_TOOL);
  assert.equal(asked.calls.length, 0);
});

test("a device-runtime plugin tool runs through the device source, like the device's own tools; routing through combineToolSources", async () => {
  const { client, asked } = plugins([installed("files-pro", "files.search", ToolRuntime.DEVICE), installed("weather", "weather.forecast", ToolRuntime.SERVER)]);
  const deviceCalls: [string, AgentTool, string][] = [];
  const devices: ToolSource = {
    list: async () => [{ name: "files.search", description: "", inputSchema: { type: "object" }, annotations: {}, origin: "device" }],
    call: async (userId, tool, callId) => (deviceCalls.push([userId, tool, callId]), { ok: true, content: '{"files":[]}', deviceId: "d1" }),
  };
  const pluginSource = createPluginToolSource({ plugins: client, devices });
  const viaPlugin = (await pluginSource.list("u1", never)).find((t) => t.name === "files.search")!;
  assert.equal(viaPlugin.origin, "plugin:files-pro");
  assert.equal((await pluginSource.call("u1", viaPlugin, "c0", "{}", 1000, never)).ok, true);
  assert.deepEqual(deviceCalls.map(([u, t, c]) => [u, t.name, t.origin, c]), [["u1", "files.search", "device", "c0"]], "the plugin's entry runs on the device");
  deviceCalls.length = 0;
  const all = combineToolSources({ device: devices, plugin: pluginSource });
  const tools = new Map((await all.list("u1", never)).map((t) => [t.name, t]));
  assert.deepEqual(await all.call("u1", tools.get("files.search")!, "c1", '{"query":"x"}', 1000, never), { ok: true, content: '{"files":[]}', deviceId: "d1" });
  assert.deepEqual(deviceCalls.map(([u, t, c]) => [u, t.name, t.origin, c]), [["u1", "files.search", "device", "c1"]]);
  assert.equal((await all.call("u1", tools.get("weather.forecast")!, "c2", "{}", 1000, never)).ok, true);
  assert.equal(asked.calls.length, 1, "only the server tool went to CallPluginTool");
});

test("plugin change events name their user; anything else names nobody", () => {
  const installedEvent = toBinary(PluginInstalledSchema, create(PluginInstalledSchema, { userId: "u1", pluginId: "p" }));
  const uninstalledEvent = toBinary(PluginUninstalledSchema, create(PluginUninstalledSchema, { userId: "u2", pluginId: "p" }));
  assert.equal(userOfEvent(pluginChangeEvents, eventSubject(PluginInstalledSchema), installedEvent), "u1");
  assert.equal(userOfEvent(pluginChangeEvents, eventSubject(PluginUninstalledSchema), uninstalledEvent), "u2");
  assert.equal(userOfEvent(pluginChangeEvents, eventSubject(TierChangedSchema), installedEvent), undefined);
  assert.equal(userOfEvent(pluginChangeEvents, eventSubject(PluginInstalledSchema), new Uint8Array([0xff, 0xff])), undefined);
});
