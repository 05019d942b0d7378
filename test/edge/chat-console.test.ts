/**
 * The console as the assistant, in headless Chromium against `npm start`
 * (every service in one process, its own PostgreSQL database and
 * nats-server) with the local provider server as the model: a person
 * chats, sees a tool call on their `ws` device start and finish and the
 * answer stream in, approves a destructive call after reloading the page
 * (the panel resumes the waiting turn), and sees the agent catalogue.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { providerSafeToolNames } from "../../services/chat/model/index.js";
import { connectToolDevice } from "../chat/support.js";
import type { TestDevice } from "../gateway/support.js";
import { startLlmServer, textReply, toolCallReply, type LlmServer } from "../support/llm-server.js";
import { ensureChromium, launchChromium } from "./chromium.js";
import { startNpmStart, type NpmStart } from "./npm-start.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const createNote = "notes.create_note";
const deleteFile = "filesystem.delete_file";
const safe = providerSafeToolNames([createNote, deleteFile]);

let app: NpmStart;
let llm: LlmServer;

before(
  async () => {
    ensureChromium();
    llm = await startLlmServer();
    app = await startNpmStart({ RATE_LIMIT_ENABLED: "false", ...llm.env("openai") }, 180_000);
  },
  { timeout: 900_000 },
);
after(async () => {
  await app?.stop();
  await llm?.close();
});

async function signIn(page: Page, email: string, password: string): Promise<void> {
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("#login");
  await page.locator("#status", { hasText: "Signed in as" }).waitFor({ timeout: 30_000 });
}

describe("the assistant in the browser console", () => {
  test("chat with a device tool, approve a destructive call after a reload, see the agent catalogue", { timeout: 300_000 }, async () => {
    const browser = await launchChromium();
    let device: TestDevice | undefined;
    const errors: string[] = [];
    try {
      const page = await browser.context.newPage();
      page.on("pageerror", (err) => errors.push(String(err)));
      const email = `chat-${randomBytes(4).toString("hex")}@example.com`;
      const password = "correct horse battery staple";
      await page.goto(`${app.baseUrl}/`, { timeout: 180_000 });
      await page.fill("#email", email);
      await page.fill("#password", password);
      await page.click("#register");
      await page.locator("#status", { hasText: "Signed in as" }).waitFor({ timeout: 30_000 });
      await page.locator("#chat-panel").waitFor({ state: "visible" });
      await page.locator("#agent-catalog li", { hasText: "Tasks: Creates" }).waitFor({ timeout: 15_000 });
      assert.equal(await page.locator("#agent-catalog li").count(), 5);

      const login = await createClient(AuthService, createGrpcTransport({ baseUrl: app.baseUrl })).login({ email, password });
      device = await connectToolDevice(app.port, login.tokens!.accessToken, [{ name: createNote }, { name: deleteFile, destructive: true }], (call): JsonObject =>
        call.tool === createNote ? { saved: "yes" } : { deleted: String(call.arguments?.path) },
      );

      // A turn with a tool call: the call shows as it runs and finishes, the answer streams in.
      llm.script(toolCallReply([{ name: safe.get(createNote)!, argumentFragments: ['{"text": "buy milk"}'] }]), textReply("Saved ", "your note."));
      await page.fill("#chat-message", "note: buy milk");
      await page.click("#chat-send");
      await page.locator("#chat-transcript .tool.ok", { hasText: `${createNote}: done` }).waitFor({ timeout: 30_000 });
      await page.locator("#chat-transcript .assistant.done", { hasText: "Saved your note." }).waitFor({ timeout: 30_000 });
      assert.deepEqual(device.calls.map((c) => c.tool), [createNote]);

      // A destructive call waits for approval; the page is reloaded meanwhile.
      llm.script(toolCallReply([{ name: safe.get(deleteFile)!, argumentFragments: ['{"path": "/tmp/old"}'] }]), textReply("Deleted it."));
      await page.fill("#chat-message", "delete /tmp/old");
      await page.click("#chat-send");
      await page.locator("#chat-transcript button.approve").waitFor({ timeout: 30_000 });
      await page.reload();
      await signIn(page, email, password);
      // The panel resumes the waiting turn and shows the request again.
      await page.locator("#chat-transcript button.approve").waitFor({ timeout: 30_000 });
      assert.equal(device.calls.length, 1, "nothing ran before the approval");
      await page.click("#chat-transcript button.approve");
      await page
        .locator("#chat-transcript .tool.ok", { hasText: `${deleteFile}: done` })
        .waitFor({ timeout: 30_000 })
        .catch(async (err: unknown) => assert.fail(`${String(err)}\ntranscript: ${await page.locator("#chat-transcript").innerHTML()}`));
      await page.locator("#chat-transcript .tool.ok", { hasText: `${deleteFile}: done` }).waitFor({ timeout: 30_000 });
      await page.locator("#chat-transcript .assistant.done", { hasText: "Deleted it." }).waitFor({ timeout: 30_000 });
      assert.deepEqual(device.calls.map((c) => c.tool), [createNote, deleteFile]);
      mkdirSync(join(root, "test-results"), { recursive: true });
      await page.screenshot({ path: join(root, "test-results", "chat-console.png"), fullPage: true }).catch(() => undefined);
      assert.deepEqual(errors, []);
    } finally {
      device?.ws.terminate();
      await browser.close();
    }
  });
});
