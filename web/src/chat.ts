/**
 * The assistant panel: chat turns streamed over gRPC-Web (text as it comes,
 * tool calls as they start and finish, approval buttons for destructive
 * tools), a turn resumed after a reload (its ids and last sequence are kept
 * in sessionStorage; after signing in again the panel picks it up with
 * ResumeTurn), the agent catalogue and the user's agent runs.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { AgentRunState } from "../../gen/switchyard/chat/v1/agent_pb.js";
import type { ChatResponse } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { ToolErrorCode } from "../../gen/switchyard/device/v1/device_pb.js";
import { describeError, type Session } from "./api.js";

/** Where the turn in progress is kept across a reload. */
const storageKey = "switchyard.chat.turn";

interface TurnRef {
  conversationId: string;
  turnId: string;
  lastSequence: string;
}

const el = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

function make(tag: string, className: string, text = ""): HTMLElement {
  const e = document.createElement(tag);
  e.className = className;
  e.textContent = text;
  return e;
}

function saveTurn(ref: TurnRef | undefined): void {
  if (ref === undefined) sessionStorage.removeItem(storageKey);
  else sessionStorage.setItem(storageKey, JSON.stringify(ref));
}

function savedTurn(): TurnRef | undefined {
  try {
    const v = JSON.parse(sessionStorage.getItem(storageKey) ?? "null") as TurnRef | null;
    return v ?? undefined;
  } catch {
    return undefined;
  }
}

/** Renders one turn's events into the transcript. */
function createTurnView(session: Session, onIds: (ref: TurnRef) => void) {
  const box = make("li", "turn assistant");
  el("chat-transcript").append(box);
  let text = make("div", "text");
  box.append(text);
  let ref: TurnRef | undefined;
  const tools = new Map<string, HTMLElement>();

  function toolItem(callId: string, tool: string): HTMLElement {
    let item = tools.get(callId);
    if (!item) {
      item = make("div", "tool running", `${tool}: running…`);
      item.dataset.callId = callId;
      tools.set(callId, item);
      box.insertBefore(item, text);
    }
    return item;
  }

  function approval(callId: string, tool: string, reason: string): void {
    const item = toolItem(callId, tool);
    item.textContent = `${tool} needs your approval: ${reason}`;
    const buttons = make("span", "buttons");
    for (const approved of [true, false]) {
      const b = make("button", approved ? "approve" : "refuse", approved ? "Approve" : "Refuse") as HTMLButtonElement;
      b.type = "button";
      b.addEventListener("click", async () => {
        buttons.remove();
        try {
          await session.withRefresh(() => session.chat.approveToolCall({ conversationId: ref!.conversationId, turnId: ref!.turnId, callId, approved }));
        } catch (err) {
          item.textContent = `${tool}: ${describeError(err)}`;
        }
      });
      buttons.append(b);
    }
    item.append(buttons);
  }

  return {
    show(e: ChatResponse): void {
      const ev = e.event;
      if (ref) ref.lastSequence = String(e.sequence);
      switch (ev.case) {
        case "started":
          ref = { conversationId: ev.value.conversationId, turnId: ev.value.turnId, lastSequence: String(e.sequence) };
          box.dataset.turnId = ev.value.turnId;
          break;
        case "textDelta":
          text.textContent += ev.value.text;
          break;
        case "restarted":
          text.textContent = "";
          break;
        case "toolCallStarted":
          toolItem(ev.value.callId, ev.value.tool);
          text = make("div", "text");
          box.append(text);
          break;
        case "approvalRequested":
          approval(ev.value.callId, ev.value.tool, ev.value.reason);
          break;
        case "toolCallFinished": {
          const item = toolItem(ev.value.callId, ev.value.tool);
          const outcome = ev.value.outcome;
          item.className = `tool ${outcome.case === "result" ? "ok" : "failed"}`;
          item.textContent =
            outcome.case === "error"
              ? `${ev.value.tool}: ${ToolErrorCode[outcome.value.code]?.toLowerCase() ?? "failed"}: ${outcome.value.message}`
              : `${ev.value.tool}: done`;
          break;
        }
        case "done":
          box.classList.add("done");
          break;
      }
      if (ref) onIds(ref);
    },
    fail(err: unknown): void {
      box.append(make("div", "error", describeError(err)));
    },
  };
}

/** Reads a turn's stream into a view; keeps its place in sessionStorage until it ends. */
async function follow(stream: AsyncIterable<ChatResponse>, view: ReturnType<typeof createTurnView>): Promise<void> {
  try {
    for await (const e of stream) {
      view.show(e);
      if (e.event.case === "done") saveTurn(undefined);
    }
  } catch (err) {
    const code = ConnectError.from(err).code;
    // A stream cut by a restarting server stays resumable; a finished or failed turn does not.
    if (code !== Code.Unavailable) saveTurn(undefined);
    view.fail(err);
  }
}

async function* events(stream: AsyncIterable<{ event?: ChatResponse }>): AsyncGenerator<ChatResponse> {
  for await (const r of stream) if (r.event) yield r.event;
}

async function loadCatalog(session: Session): Promise<void> {
  const select = el<HTMLSelectElement>("chat-agent");
  try {
    const { agents } = await session.withRefresh(() => session.agents.listCatalog({}));
    select.replaceChildren(new Option("Assistant", ""), ...agents.map((a) => new Option(a.displayName, a.agentId)));
    el("agent-catalog").replaceChildren(...agents.map((a) => make("li", "agent", `${a.displayName}: ${a.description}`)));
  } catch (err) {
    el("agent-catalog").replaceChildren(make("li", "error", describeError(err)));
  }
}

async function loadRuns(session: Session): Promise<void> {
  try {
    const { runs } = await session.withRefresh(() => session.agents.listRuns({ pageSize: 10 }));
    el("agent-runs").replaceChildren(...runs.map((r) => make("li", "run", `${r.agentId}: ${AgentRunState[r.state]?.toLowerCase() ?? r.state}`)));
  } catch (err) {
    el("agent-runs").replaceChildren(make("li", "error", describeError(err)));
  }
}

/** Starts a turn from the form. */
async function send(session: Session): Promise<void> {
  const input = el<HTMLTextAreaElement>("chat-message");
  const message = input.value.trim();
  if (message === "") return;
  input.value = "";
  el("chat-transcript").append(make("li", "turn user", message));
  const conversationId = el("chat-panel").dataset.conversationId ?? "";
  const view = createTurnView(session, (ref) => {
    el("chat-panel").dataset.conversationId = ref.conversationId;
    saveTurn(ref);
  });
  await follow(session.chat.chat({ conversationId, message, agentId: el<HTMLSelectElement>("chat-agent").value, keepRunning: true }), view);
}

/** Picks up the turn a reload interrupted: the page lost what it showed, so the turn is replayed from its start, then followed. */
async function resume(session: Session): Promise<void> {
  const ref = savedTurn();
  if (ref === undefined) return;
  el("chat-panel").dataset.conversationId = ref.conversationId;
  const view = createTurnView(session, saveTurn);
  await follow(events(session.chat.resumeTurn({ conversationId: ref.conversationId, turnId: ref.turnId, afterSequence: 0n })), view);
}

/**
 * Mounts the panel: it shows itself while the person is signed in (it
 * follows the #me-panel the console shows then), loads the catalogue and
 * runs, and resumes an interrupted turn.
 */
export function mountChat(session: Session): void {
  const panel = el("chat-panel");
  const me = el("me-panel");
  const sync = () => {
    const visible = !me.hidden && session.signedIn;
    if (visible === !panel.hidden) return;
    panel.hidden = !visible;
    if (!visible) return;
    void loadCatalog(session);
    void loadRuns(session);
    void resume(session);
  };
  new MutationObserver(sync).observe(me, { attributes: true, attributeFilter: ["hidden"] });
  el("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void send(session).then(() => loadRuns(session));
  });
  el("chat-new").addEventListener("click", () => {
    delete panel.dataset.conversationId;
    el("chat-transcript").replaceChildren();
  });
  sync();
}
