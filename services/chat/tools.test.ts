import assert from "node:assert/strict";
import { test } from "node:test";
import { combineToolSources, type AgentTool, type ToolSource } from "./tools.js";

const tool = (name: string, origin: string): AgentTool => ({ name, description: "", inputSchema: { type: "object" }, annotations: {}, origin });
const source = (tools: AgentTool[] | Error): ToolSource => ({
  list: async () => {
    if (tools instanceof Error) throw tools;
    return tools;
  },
  call: async (_u, t) => ({ ok: true, content: t.origin }),
});
const signal = new AbortController().signal;

test("tools of every source, the first naming a tool winning; calls go to the source that listed the tool", async () => {
  const combined = combineToolSources({ device: source([tool("a", "device"), tool("b", "device")]), plugin: source([tool("b", "plugin:x"), tool("c", "plugin:x")]) });
  const listed = await combined.list("u", signal);
  assert.deepEqual(listed.map((t) => `${t.name}@${t.origin}`), ["a@device", "b@device", "c@plugin:x"]);
  assert.deepEqual(await combined.call("u", listed[2]!, "call-1", "{}", 1000, signal), { ok: true, content: "plugin:x" });
});

test("a source that fails to list costs only its own tools; all failing fails the listing", async () => {
  const down = new Error("plugins unreachable");
  assert.deepEqual((await combineToolSources({ device: source([tool("a", "device")]), plugin: source(down) }).list("u", signal)).map((t) => t.name), ["a"]);
  await assert.rejects(combineToolSources({ device: source(new Error("gateway down")), plugin: source(down) }).list("u", signal), /gateway down/);
});
