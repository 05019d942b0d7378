/**
 * Bad input to ChatService and AgentService, against chat processes on a
 * real PostgreSQL and nats-server: each gets its gRPC code and a message a
 * person can act on, another user's data is NOT_FOUND without revealing it
 * exists, and no process falls over.
 */
import { Code } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createTestDatabase, natsUrl } from "../support/infra.js";
import { newPrefix, newUser, startTestKeys, dropPrefix, type GatewayProcess, type TestKeys } from "../gateway/support.js";
import { startGatewayProcess, chatClients, failure, readAll, startChat, unwrap, type ChatProcess } from "./support.js";

describe("chat bad input", () => {
  let keys: TestKeys;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let gw: GatewayProcess;
  let noModel: ChatProcess;
  let unreachable: ChatProcess;
  const prefix = newPrefix();
  let nats: string;

  before(async () => {
    keys = await startTestKeys();
    db = await createTestDatabase("sy_chat_bad");
    nats = await natsUrl();
    gw = await startGatewayProcess({ NATS_URL: nats, AUTH_JWKS_URL: keys.jwksUrl, GATEWAY_NATS_PREFIX: prefix });
    const env = { DATABASE_URL: db.url, NATS_URL: nats };
    noModel = await startChat(keys, gw.baseUrl, env);
    // A real SDK pointed at a port where nothing listens: every model call fails UNAVAILABLE.
    unreachable = await startChat(keys, gw.baseUrl, { ...env, LLM_PROVIDER: "openai", LLM_BASE_URL: "http://127.0.0.1:1/v1", LLM_API_KEY: "k", LLM_MODEL: "m" });
  });

  after(async () => {
    await Promise.all([noModel?.stop(), unreachable?.stop(), gw?.kill()]);
    await db?.drop();
    await dropPrefix(nats, prefix);
    await keys?.close();
  });

  test("with no model configured, Chat answers FAILED_PRECONDITION naming the variables to set", async () => {
    const { chat } = chatClients(noModel.baseUrl, await keys.mint(newUser()));
    const f = await failure(chat.chat({ message: "hello" }));
    assert.equal(f.code, Code.FailedPrecondition);
    assert.match(f.message, /LLM_PROVIDER/);
    assert.match(f.message, /LLM_API_KEY/);
  });

  test("a message over 32,000 characters is INVALID_ARGUMENT", async () => {
    const { chat } = chatClients(unreachable.baseUrl, await keys.mint(newUser()));
    const f = await failure(chat.chat({ message: "x".repeat(32_001) }));
    assert.equal(f.code, Code.InvalidArgument);
    assert.match(f.message, /message/);
  });

  test("an agent id not in the catalogue is NOT_FOUND, in Chat, CanCreate and Trigger", async () => {
    const { chat, agents } = chatClients(unreachable.baseUrl, await keys.mint(newUser()));
    const f = await failure(chat.chat({ message: "hi", agentId: "no_such_agent" }));
    assert.equal(f.code, Code.NotFound);
    assert.match(f.message, /no_such_agent/);
    assert.equal((await failure(agents.canCreate({ agentId: "no_such_agent" }))).code, Code.NotFound);
    assert.equal((await failure(agents.trigger({ agentId: "no_such_agent" }))).code, Code.NotFound);
  });

  test("another user's conversation and turn are NOT_FOUND, worded as for ones that do not exist", async () => {
    const alice = chatClients(unreachable.baseUrl, await keys.mint(newUser()));
    const first = await readAll(alice.chat.chat({ message: "remember me" }));
    assert.equal(first.events[0]?.event.case, "started");
    // The provider cannot be reached: the turn fails UNAVAILABLE after it started.
    assert.equal(first.error?.code, Code.Unavailable);
    const started = first.events[0]!.event.value as { conversationId: string; turnId: string };

    const mallory = chatClients(unreachable.baseUrl, await keys.mint(newUser()));
    const theirs = await failure(mallory.chat.chat({ conversationId: started.conversationId, message: "what did they say?" }));
    const none = await failure(mallory.chat.chat({ conversationId: "c0ffee", message: "what did they say?" }));
    assert.equal(theirs.code, Code.NotFound);
    assert.equal(none.code, Code.NotFound);
    assert.equal(theirs.message.replace(started.conversationId, "ID"), none.message.replace("c0ffee", "ID"));

    const resume = await failure(mallory.chat.resumeTurn({ conversationId: started.conversationId, turnId: started.turnId }));
    assert.equal(resume.code, Code.NotFound);
    const approve = await failure(mallory.chat.approveToolCall({ conversationId: started.conversationId, turnId: started.turnId, callId: "x", approved: true }));
    assert.equal(approve.code, Code.NotFound);

    // Alice herself can resume her failed turn: its events, then its error.
    const again = await readAll(unwrap(alice.chat.resumeTurn({ conversationId: started.conversationId, turnId: started.turnId })));
    assert.equal(again.events[0]?.event.case, "started");
    assert.equal(again.error?.code, Code.Unavailable);
  });

  test("a user triggering a run for another user is PERMISSION_DENIED; a service must name the user", async () => {
    const { agents } = chatClients(unreachable.baseUrl, await keys.mint(newUser()));
    const f = await failure(agents.trigger({ agentId: "task_agent", userId: newUser(), input: { instruction: "x" } }));
    assert.equal(f.code, Code.PermissionDenied);
    assert.match(f.message, /only for themself/);
    const service = chatClients(unreachable.baseUrl, await keys.mint("service:scheduler", { roles: ["service"] }));
    assert.equal((await failure(service.agents.trigger({ agentId: "task_agent", input: { instruction: "x" } }))).code, Code.InvalidArgument);
  });

  test("the processes are still up", async () => {
    for (const p of [noModel, unreachable]) assert.equal((await fetch(`${p.baseUrl}/readyz`)).status, 200);
  });
});
