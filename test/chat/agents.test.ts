/**
 * AgentService against a chat process, a gateway, a `ws` device and the
 * local provider server: the catalogue from its seed migration, CanCreate
 * against tiers and set-up, Trigger by a user and by a service with an
 * idempotency key, the run's event stream, GetRun / ListRuns, and
 * AgentRunFinished published through the outbox.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { AgentRunState, CanCreateDenial } from "../../gen/switchyard/chat/v1/agent_pb.js";
import { AgentRunFinishedSchema, type AgentRunFinished } from "../../gen/switchyard/events/v1/events_pb.js";
import { providerSafeToolNames } from "../../services/chat/model/index.js";
import { createTestDatabase, natsUrl } from "../support/infra.js";
import { startLlmServer, textReply, toolCallReply, type LlmServer } from "../support/llm-server.js";
import { dropPrefix, eventually, newPrefix, newUser, startTestKeys, type GatewayProcess, type TestDevice, type TestKeys } from "../gateway/support.js";
import { chatClients, connectToolDevice, failure, kinds, readAll, startChat, startGatewayProcess, unwrap, type ChatProcess } from "./support.js";

describe("agent catalogue and runs", () => {
  let keys: TestKeys;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let llm: LlmServer;
  let nats: string;
  let nc: NatsConnection;
  const prefix = newPrefix();
  let gw: GatewayProcess;
  let chat: ChatProcess;
  const devices: TestDevice[] = [];
  const finished: AgentRunFinished[] = [];

  before(async () => {
    keys = await startTestKeys();
    db = await createTestDatabase("sy_chat_agents");
    llm = await startLlmServer();
    nats = await natsUrl();
    nc = await connect({ servers: nats });
    nc.subscribe("events.chat.agent_run_finished", { callback: (_e, m) => void finished.push(fromBinary(AgentRunFinishedSchema, m.data)) });
    gw = await startGatewayProcess({ NATS_URL: nats, AUTH_JWKS_URL: keys.jwksUrl, GATEWAY_NATS_PREFIX: prefix });
    chat = await startChat(keys, gw.baseUrl, { DATABASE_URL: db.url, NATS_URL: nats, ...llm.env("anthropic") });
  });

  after(async () => {
    for (const d of devices) d.ws.terminate();
    await chat?.stop();
    await gw?.kill();
    await nc?.close();
    await llm?.close();
    await db?.drop();
    await dropPrefix(nats, prefix);
    await keys?.close();
  });

  test("the catalogue lists the seeded agents in order, page by page", async () => {
    const { agents } = chatClients(chat.baseUrl, await keys.mint(newUser()));
    const all = await agents.listCatalog({});
    assert.deepEqual(
      all.agents.map((a) => a.agentId),
      ["filesystem_agent", "note_agent", "project_agent", "task_agent", "timeline_agent"],
    );
    const task = all.agents.find((a) => a.agentId === "task_agent")!;
    assert.equal(task.name, "agents/task_agent");
    assert.ok(task.tools.includes("tasks.create_task"));
    assert.deepEqual((task.inputSchema as { required?: string[] }).required, ["instruction"]);
    const p1 = await agents.listCatalog({ pageSize: 2 });
    const p2 = await agents.listCatalog({ pageSize: 2, pageToken: p1.nextPageToken });
    const p3 = await agents.listCatalog({ pageSize: 2, pageToken: p2.nextPageToken });
    assert.deepEqual([...p1.agents, ...p2.agents, ...p3.agents].map((a) => a.agentId), all.agents.map((a) => a.agentId));
    assert.equal(p3.nextPageToken, "");
    assert.equal((await failure(agents.listCatalog({ pageToken: "garbage" }))).code, Code.InvalidArgument);
  });

  test("CanCreate tells tier too low, allowed, and already set up (after a Chat turn with the agent)", async () => {
    const token = await keys.mint(newUser(), { tier: "free" });
    const { agents, chat: c } = chatClients(chat.baseUrl, token);
    const low = await agents.canCreate({ agentId: "filesystem_agent" });
    assert.equal(low.allowed, false);
    assert.equal(low.denial, CanCreateDenial.TIER_TOO_LOW);
    assert.match(low.reason, /power tier/);
    const ok = await agents.canCreate({ agentId: "task_agent" });
    assert.equal(ok.allowed, true);
    assert.equal(ok.limit, 2);
    assert.equal((await failure(c.chat({ message: "hi", agentId: "filesystem_agent" }))).code, Code.PermissionDenied);

    llm.script(textReply("Task agent ready."));
    const turn = await readAll(c.chat({ message: "set up", agentId: "task_agent" }));
    assert.equal(turn.error, undefined, turn.error?.message);
    const again = await agents.canCreate({ agentId: "task_agent" });
    assert.equal(again.denial, CanCreateDenial.ALREADY_CREATED);
    assert.equal(again.used, 1);
  });

  test("Trigger runs an agent in the background with its tools only; the run streams, ends SUCCEEDED, and AgentRunFinished goes out", async () => {
    const user = newUser();
    const token = await keys.mint(user);
    const { agents, chat: c } = chatClients(chat.baseUrl, token);
    const createTask = "tasks.create_task";
    const safe = providerSafeToolNames([createTask]).get(createTask)!;
    const device = await connectToolDevice(gw.port, token, [{ name: createTask }, { name: "filesystem.read_file" }], (call) => ({ created: String(call.arguments?.title) }));
    devices.push(device);

    assert.equal((await failure(agents.trigger({ agentId: "task_agent", input: { instruction: "x" } }))).code, Code.FailedPrecondition, "not set up yet");
    llm.script(textReply("Ready."));
    await readAll(c.chat({ message: "set up", agentId: "task_agent" }));
    assert.equal((await failure(agents.trigger({ agentId: "task_agent", input: { wrong: 1 } }))).code, Code.InvalidArgument, "input must fit the agent's schema");

    const base = llm.requests.length;
    llm.script(toolCallReply([{ name: safe, argumentFragments: ['{"title": "buy milk"}'] }]), textReply("Created the task."));
    const { run } = await agents.trigger({ agentId: "task_agent", input: { instruction: "remind me to buy milk" }, idempotencyKey: "k1" });
    assert.ok(run);
    assert.equal(run.userId, user);
    assert.equal(run.state, AgentRunState.RUNNING);

    const events = await readAll(unwrap(agents.streamRun({ runId: run.runId })));
    assert.equal(events.error, undefined, events.error?.message);
    assert.deepEqual(kinds(events.events), ["started", "toolCallStarted", "toolCallFinished", "textDelta", "done"]);
    assert.equal(device.calls.length, 1);
    const offered = JSON.stringify((llm.requests[base]!.body as { tools?: unknown }).tools);
    assert.ok(offered.includes(safe));
    assert.ok(!offered.includes("read_file"), "the agent is offered only its allow-listed tools");

    const got = (await agents.getRun({ runId: run.runId })).run!;
    assert.equal(got.state, AgentRunState.SUCCEEDED);
    assert.deepEqual(got.output, { text: "Created the task." });
    assert.equal(got.usage?.toolCalls, 1);
    assert.ok(got.endTime);

    await eventually(() => finished.some((f) => f.runId === run.runId), 15_000, "AgentRunFinished");
    const ev = finished.find((f) => f.runId === run.runId)!;
    assert.equal(ev.userId, user);
    assert.equal(ev.agentId, "task_agent");
    assert.equal(ev.state, AgentRunState.SUCCEEDED);
    assert.equal(ev.usage?.toolCalls, 1);
    assert.ok(ev.duration);

    // The same idempotency key returns the same run; with other input it is refused.
    const retry = await agents.trigger({ agentId: "task_agent", input: { instruction: "remind me to buy milk" }, idempotencyKey: "k1" });
    assert.equal(retry.run?.runId, run.runId);
    assert.equal((await failure(agents.trigger({ agentId: "task_agent", input: { instruction: "other" }, idempotencyKey: "k1" }))).code, Code.AlreadyExists);

    // A service triggers for the user; ListRuns lists newest first; another user sees none of it.
    llm.script(textReply("Done for the service."));
    const service = chatClients(chat.baseUrl, await keys.mint("service:scheduler", { roles: ["service"] }));
    const byService = (await service.agents.trigger({ agentId: "task_agent", userId: user, input: { instruction: "weekly review" } })).run!;
    await readAll(unwrap(agents.streamRun({ runId: byService.runId })));
    const listed = await agents.listRuns({});
    assert.deepEqual(listed.runs.map((r) => r.runId), [byService.runId, run.runId]);
    const p1 = await agents.listRuns({ pageSize: 1 });
    const p2 = await agents.listRuns({ pageSize: 1, pageToken: p1.nextPageToken });
    assert.deepEqual([...p1.runs, ...p2.runs].map((r) => r.runId), [byService.runId, run.runId]);
    const other = chatClients(chat.baseUrl, await keys.mint(newUser()));
    assert.equal((await failure(other.agents.getRun({ runId: run.runId }))).code, Code.NotFound);
    assert.equal((await failure(other.agents.listRuns({ userId: user }))).code, Code.PermissionDenied);
  });
});
