/**
 * Durable turns: the chat instance running a turn is SIGKILLed, once while a
 * device holds its tool call and once while the model streams; another
 * instance takes the turn over from its last recorded step and finishes it.
 * The tool runs exactly once and its result is not lost (its call id comes
 * from the turn and step, the call runs on after its caller died, and the
 * gateway answers a repeated id with the first outcome); the interrupted
 * model call runs again whole, announced by `restarted`; a client that
 * resumes the turn on another instance gets every event once, in order.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { ChatResponse, ToolCallFinished } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { providerSafeToolNames } from "../../services/chat/model/index.js";
import { createTestDatabase, natsUrl } from "../support/infra.js";
import { startLlmServer, textReply, toolCallReply, type LlmServer } from "../support/llm-server.js";
import { dropPrefix, eventually, newPrefix, newUser, startTestKeys, type GatewayProcess, type TestDevice, type TestKeys } from "../gateway/support.js";
import { chatClients, connectToolDevice, kinds, readAll, startChat, startGatewayProcess, textOf, unwrap, type ChatProcess } from "./support.js";

const readFile = { name: "filesystem.read_file", schema: { type: "object", properties: { path: { type: "string" } }, required: ["path"] } };
const safeReadFile = providerSafeToolNames([readFile.name]).get(readFile.name)!;

/**
 * Asserts a client that held `before` from the killed instance and then
 * resumed after the last of them got every event once, in order, to the
 * turn's end: `before` numbered 1..k, the resumed events one more each from
 * k+1, or from k+2 where the instance taking over skipped the number of a
 * text delta the killed one may have streamed without recording (when the
 * client held that very delta, it is its k, and nothing is skipped for it).
 */
function assertWhole(before: readonly ChatResponse[], resumed: readonly ChatResponse[]): void {
  const held = before.map((e) => Number(e.sequence));
  assert.deepEqual(held, before.map((_, i) => i + 1));
  const next = resumed.map((e) => Number(e.sequence));
  const from = next[0]!;
  assert.ok(from === held.length + 1 || from === held.length + 2, `resumed from ${from} after ${held.length}`);
  assert.deepEqual(next, resumed.map((_, i) => from + i));
  assert.equal(before[0]!.event.case, "started");
  assert.equal(resumed.at(-1)!.event.case, "done");
}

describe("turns survive a SIGKILLed chat instance", () => {
  let keys: TestKeys;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let llm: LlmServer;
  let nats: string;
  const prefix = newPrefix();
  let gwA: GatewayProcess, gwB: GatewayProcess;
  const chats: ChatProcess[] = [];
  const devices: TestDevice[] = [];
  let env: Record<string, string>;

  before(async () => {
    keys = await startTestKeys();
    db = await createTestDatabase("sy_chat_takeover");
    llm = await startLlmServer();
    nats = await natsUrl();
    const gwEnv = { NATS_URL: nats, AUTH_JWKS_URL: keys.jwksUrl, GATEWAY_NATS_PREFIX: prefix, GATEWAY_HEARTBEAT_MS: "1000" };
    gwA = await startGatewayProcess(gwEnv);
    gwB = await startGatewayProcess(gwEnv);
    env = { DATABASE_URL: db.url, NATS_URL: nats, CHAT_TURN_LEASE_MS: "1500", LLM_STALL_TIMEOUT_MS: "60000", ...llm.env("openai") };
    chats.push(await startChat(keys, gwA.baseUrl, env));
    chats.push(await startChat(keys, gwB.baseUrl, env));
  });

  after(async () => {
    for (const d of devices) d.ws.terminate();
    await Promise.all(chats.map((c) => c.stop()));
    await Promise.all([gwA?.kill(), gwB?.kill()]);
    await llm?.close();
    await db?.drop();
    await dropPrefix(nats, prefix);
    await keys?.close();
  });

  test("killed during a tool call: the call runs on, the other instance finishes the turn with the tool's real result, the tool ran once, a resuming client gets every event once", async () => {
    const [c1, c2] = chats as [ChatProcess, ChatProcess];
    const token = await keys.mint(newUser());
    // The device holds the call until the other instance has taken the turn over (long after the
    // gateway saw the dead instance's RPC go), then answers: the result must reach the model anyway.
    let takenOver!: () => void;
    const answer = new Promise<void>((resolve) => (takenOver = resolve));
    const device = await connectToolDevice(gwB.port, token, [readFile], async () => {
      await answer;
      return { content: "the contents of /tmp/a" };
    });
    const takeovers = async () => Number(/^chat_turn_takeovers_total (\d+)/m.exec(await (await fetch(`${c2.baseUrl}/metrics`)).text())?.[1] ?? 0);
    const takeoversBefore = await takeovers();
    devices.push(device);
    llm.script(toolCallReply([{ name: safeReadFile, argumentFragments: ['{"path": "/tmp/a"}'] }]), textReply("Finished ", "elsewhere."));
    const base = llm.requests.length;

    const first = await readAll(chatClients(c1.baseUrl, token).chat.chat({ message: "read /tmp/a" }), async (e) => {
      if (e.event.case !== "toolCallStarted") return;
      await eventually(() => device.calls.length === 1, 10_000, "the device to receive the call");
      await c1.stop("SIGKILL");
      await eventually(async () => (await takeovers()) > takeoversBefore, 20_000, "the other instance to take the turn over");
      takenOver();
    });
    assert.ok(first.error, "the stream from the killed instance ends with an error");
    assert.deepEqual(kinds(first.events), ["started", "toolCallStarted"]);
    const { conversationId, turnId } = first.events[0]!.event.value as { conversationId: string; turnId: string };

    const resumed = await readAll(unwrap(chatClients(c2.baseUrl, token).chat.resumeTurn({ conversationId, turnId, afterSequence: first.events.at(-1)!.sequence })));
    assert.equal(resumed.error, undefined, resumed.error?.message);
    assertWhole(first.events, resumed.events);
    const all = [...first.events, ...resumed.events];
    assert.deepEqual(kinds(all).filter((k) => k === "toolCallStarted" || k === "toolCallFinished"), ["toolCallStarted", "toolCallFinished"]);
    const finished = all.find((e) => e.event.case === "toolCallFinished")!.event.value as ToolCallFinished;
    assert.equal(finished.outcome.case, "result", `the taken-over turn sees the tool's result, not ${JSON.stringify(finished.outcome.value)}`);
    assert.deepEqual(finished.outcome.value, { content: "the contents of /tmp/a" });
    assert.ok(JSON.stringify(llm.requests[base + 1]!.body).includes("the contents of /tmp/a"), "the model received the tool's result");
    assert.equal(textOf(all), "Finished elsewhere.");
    assert.equal(device.calls.length, 1, "the tool call reached the device exactly once");

    // A client replaying the whole turn gets the same events.
    const replay = await readAll(unwrap(chatClients(c2.baseUrl, token).chat.resumeTurn({ conversationId, turnId })));
    assert.deepEqual(
      replay.events.map((e) => [Number(e.sequence), e.event.case]),
      all.map((e) => [Number(e.sequence), e.event.case]),
    );
  });

  test("killed during a model stream: the model call runs again whole, the stream says so, and every event arrives once", async () => {
    const c2 = chats[1]!;
    const c3 = await startChat(keys, gwA.baseUrl, env);
    chats.push(c3);
    const token = await keys.mint(newUser());
    llm.script({ kind: "reply", text: ["Half ", "an ", "answer"], fault: { afterParts: 2, type: "stall" } }, textReply("The whole ", "answer."));

    let text = "";
    const first = await readAll(chatClients(c2.baseUrl, token).chat.chat({ message: "tell me" }), async (e) => {
      if (e.event.case === "textDelta" && (text += e.event.value.text) === "Half an ") await c2.stop("SIGKILL");
    });
    assert.ok(first.error);
    assert.deepEqual([...new Set(kinds(first.events))], ["started", "textDelta"]);
    assert.equal(textOf(first.events), "Half an ", "the text streamed before the kill");
    const { conversationId, turnId } = first.events[0]!.event.value as { conversationId: string; turnId: string };

    const resumed = await readAll(unwrap(chatClients(c3.baseUrl, token).chat.resumeTurn({ conversationId, turnId, afterSequence: first.events.at(-1)!.sequence })));
    assert.equal(resumed.error, undefined, resumed.error?.message);
    assert.equal(resumed.events[0]!.event.case, "restarted", "the client is told to drop the partial text");
    assertWhole(first.events, resumed.events);
    const all = [...first.events, ...resumed.events];
    assert.equal(textOf(all), "The whole answer.");

    // The history holds the whole answer only.
    llm.script(textReply("ok"));
    const base = llm.requests.length;
    const next = await readAll(chatClients(c3.baseUrl, token).chat.chat({ conversationId, message: "again" }));
    assert.equal(next.error, undefined, next.error?.message);
    const sent = JSON.stringify(llm.requests[base]!.body);
    assert.ok(sent.includes("The whole answer."));
    assert.ok(!sent.includes("Half "));
  });
});
