/**
 * The console's page logic: sign-up and sign-in, the caller (GetMe), their
 * devices and tool calls, and a live notification feed (Subscribe), all over
 * gRPC-Web. No framework: a handful of elements updated by hand.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { JsonObject } from "@bufbuild/protobuf";
import { Platform, type Device } from "../../gen/switchyard/device/v1/device_pb.js";
import type { Notification } from "../../gen/switchyard/notify/v1/notify_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import type { User } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { createSession, describeError } from "./api.js";
import { mountBilling } from "./billing.js";
import { mountPlugins } from "./plugins.js";
import { mountStorage } from "./storage.js";
import { mountChat } from "./chat.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from index.html`);
  return el as T;
};

const session = createSession();
let feed: AbortController | undefined;

function setStatus(text: string, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

function showSignedIn(signedIn: boolean) {
  $("account-panel").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
  for (const id of ["me-panel", "devices-panel", "notifications-panel"]) $(id).hidden = !signedIn;
}

function renderMe(user: User) {
  const rows: [string, string][] = [
    ["Name", user.displayName || "(none)"],
    ["Email", user.email],
    ["User id", user.userId],
    ["Tier", Tier[user.tier]?.replace(/^TIER_/, "").toLowerCase() ?? String(user.tier)],
  ];
  $("me").replaceChildren(
    ...rows.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dd.dataset.field = k.toLowerCase().replace(/ /g, "-");
      return [dt, dd];
    }),
  );
}

function renderDevices(devices: readonly Device[]) {
  const rows = devices.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.deviceId = d.deviceId;
    for (const text of [d.deviceName || "(unnamed)", d.deviceId, Platform[d.platform]?.replace(/^PLATFORM_/, "").toLowerCase() ?? "", d.tools.map((t) => t.name).join(", ")]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 4;
    td.textContent = "No device is connected.";
    tr.append(td);
    rows.push(tr);
  }
  $("devices").replaceChildren(...rows);
  const select = $<HTMLSelectElement>("tool-device");
  const chosen = select.value;
  select.replaceChildren(select.options[0]!, ...devices.map((d) => new Option(`${d.deviceName || d.deviceId} (${d.deviceId})`, d.deviceId)));
  select.value = devices.some((d) => d.deviceId === chosen) ? chosen : "";
}

function addNotification(n: Notification) {
  const li = document.createElement("li");
  li.dataset.sequence = String(n.sequence);
  const title = document.createElement("strong");
  title.textContent = n.title;
  li.append(title);
  if (n.kind) {
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = n.kind;
    li.append(kind);
  }
  if (n.body) {
    const body = document.createElement("div");
    body.textContent = n.body;
    li.append(body);
  }
  $("notifications").prepend(li);
}

/** Lists the recent notifications, then follows new ones, resuming after any break. */
async function followNotifications(signal: AbortSignal) {
  const state = $("feed-state");
  let last = 0n;
  try {
    const recent = await session.withRefresh(() => session.notifications.list({ pageSize: 20 }, { signal }));
    for (const n of [...recent.notifications].reverse()) addNotification(n);
    last = recent.notifications[0]?.sequence ?? 0n;
  } catch (err) {
    if (signal.aborted) return;
    state.textContent = `(history unavailable: ${describeError(err)})`;
  }
  let delay = 1000;
  while (!signal.aborted) {
    try {
      state.textContent = "(connecting…)";
      await session.withRefresh(async () => {
        for await (const msg of session.notifications.subscribe({ afterSequence: last }, { signal })) {
          delay = 1000;
          if (msg.event.case === "heartbeat") state.textContent = "(live)";
          if (msg.event.case !== "notification") continue;
          const n = msg.event.value;
          if (n.sequence <= last) continue; // already shown
          addNotification(n);
          last = n.sequence;
        }
      });
    } catch (err) {
      if (signal.aborted) return;
      const code = ConnectError.from(err).code;
      if (code === Code.Unauthenticated) {
        state.textContent = "(signed out)";
        return;
      }
      if (code === Code.OutOfRange) last = 0n; // the server's stream was reset
      state.textContent = `(reconnecting: ${describeError(err)})`;
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15_000);
  }
}

async function signedIn(user: User) {
  showSignedIn(true);
  renderMe(user);
  setStatus(`Signed in as ${user.displayName || user.email}.`);
  feed?.abort();
  feed = new AbortController();
  void followNotifications(feed.signal);
  await refreshMe();
  await refreshDevices();
}

async function refreshMe() {
  try {
    const res = await session.withRefresh(() => session.auth.getMe({}));
    if (res.user) renderMe(res.user);
  } catch (err) {
    setStatus(`Could not load your profile: ${describeError(err)}`, true);
  }
}

async function refreshDevices() {
  try {
    const res = await session.withRefresh(() => session.devices.listDevices({}));
    renderDevices(res.devices);
  } catch (err) {
    setStatus(`Could not list devices: ${describeError(err)}`, true);
  }
}

function credentials() {
  return { email: $<HTMLInputElement>("email").value.trim(), password: $<HTMLInputElement>("password").value };
}

$("account-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const { email, password } = credentials();
  setStatus("Signing in…");
  try {
    await signedIn(await session.login(email, password));
  } catch (err) {
    setStatus(`Could not sign in: ${describeError(err)}`, true);
  }
});

$("register").addEventListener("click", async () => {
  const form = $<HTMLFormElement>("account-form");
  if (!form.reportValidity()) return;
  const { email, password } = credentials();
  setStatus("Registering…");
  try {
    await signedIn(await session.register(email, password, $<HTMLInputElement>("display-name").value.trim()));
  } catch (err) {
    setStatus(`Could not register: ${describeError(err)}`, true);
  }
});

$("logout").addEventListener("click", async () => {
  feed?.abort();
  await session.logout();
  $("notifications").replaceChildren();
  $("me").replaceChildren();
  showSignedIn(false);
  setStatus("Signed out.");
});

$("refresh-devices").addEventListener("click", () => void refreshDevices());

$("tool-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("tool-result");
  out.classList.remove("error");
  let args: JsonObject;
  try {
    const parsed: unknown = JSON.parse($<HTMLTextAreaElement>("tool-args").value || "{}");
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("arguments must be a JSON object");
    args = parsed as JsonObject;
  } catch (err) {
    out.textContent = `Arguments: ${(err as Error).message}`;
    out.classList.add("error");
    return;
  }
  out.textContent = "Calling…";
  try {
    const res = await session.withRefresh(() =>
      session.devices.callTool({
        deviceId: $<HTMLSelectElement>("tool-device").value,
        tool: $<HTMLInputElement>("tool-name").value.trim(),
        arguments: args,
        timeout: { seconds: 30n },
      }),
    );
    if (res.outcome.case === "result") out.textContent = `Result from ${res.deviceId}:\n${JSON.stringify(res.outcome.value, null, 2)}`;
    else {
      out.textContent = `The tool failed on ${res.deviceId}: ${res.outcome.value?.message ?? "no detail"}`;
      out.classList.add("error");
    }
  } catch (err) {
    out.textContent = describeError(err);
    out.classList.add("error");
  }
});

showSignedIn(false);
mountBilling(session);
mountPlugins(session);
mountStorage(session);
mountChat(session);
