/**
 * The console's plugin marketplace: plugins listed with search, a category
 * and "installed only"; each with its price, tier, tools and the caller's
 * state (installed, suspended, available), and Install/Uninstall buttons.
 * When a plugin needs a higher tier the server's FAILED_PRECONDITION message
 * (which names the tier) is shown beside it.
 *
 * The panel follows sign-in by itself (it watches the header's signed-in
 * marker), so the page mounts it with one call.
 */
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { PluginService, ToolRuntime, type Plugin } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { describeError, type Session } from "./api.js";

const byId = <T extends HTMLElement = HTMLElement>(id: string) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from index.html`);
  return el as T;
};

const tierName = (t: Tier) => Tier[t]?.toLowerCase() ?? String(t);

/** A price for people: "free", or the amount in its currency (minor units → major). */
export function formatPrice(minorUnits: bigint, currencyCode: string): string {
  if (minorUnits === 0n || currencyCode === "") return "free";
  const format = new Intl.NumberFormat(undefined, { style: "currency", currency: currencyCode });
  const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
  return `${format.format(Number(minorUnits) / 10 ** digits)} / month`;
}

/** A fresh idempotency key (an id: letters and digits), one per click, so a retried request installs once. */
function idempotencyKey(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, className?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function stateOf(p: Plugin): "installed" | "suspended" | "available" {
  if (p.suspended) return "suspended";
  return p.installed ? "installed" : "available";
}

/** Mounts the marketplace panel (#plugins-panel) on `session`. */
export function mountPlugins(session: Session): void {
  const plugins: Client<typeof PluginService> = createClient(PluginService, session.transport);
  const panel = byId("plugins-panel");
  const list = byId<HTMLUListElement>("plugins");
  const message = byId("plugins-message");
  const more = byId<HTMLButtonElement>("plugins-more");
  const category = byId<HTMLSelectElement>("plugins-category");
  const categories = new Set<string>();
  let nextPageToken = "";
  let generation = 0;

  function say(text: string, error = false) {
    message.textContent = text;
    message.classList.toggle("error", error);
  }

  function filters() {
    return {
      query: byId<HTMLInputElement>("plugins-query").value.trim(),
      category: category.value,
      installedOnly: byId<HTMLInputElement>("plugins-installed-only").checked,
    };
  }

  function noteCategories(found: readonly Plugin[]) {
    const before = categories.size;
    for (const p of found) categories.add(p.category);
    if (categories.size === before) return;
    const chosen = category.value;
    category.replaceChildren(new Option("all", ""), ...[...categories].sort().map((c) => new Option(c, c)));
    category.value = chosen;
  }

  function row(p: Plugin): HTMLLIElement {
    const li = el("li", undefined, "plugin");
    li.dataset.pluginId = p.pluginId;
    li.dataset.state = stateOf(p);
    const head = el("div", undefined, "plugin-head");
    head.append(el("strong", p.displayName), el("span", ` ${p.version} · ${p.publisher} · ${p.category}`, "kind"));
    const facts = el("div", `${formatPrice(p.priceMinorUnits, p.currencyCode)} · ${tierName(p.minTier)} tier or higher · ${p.installCount} installs`, "plugin-facts");
    const tools = el("div", `Tools: ${p.toolSpecs.map((t) => `${t.name} (${t.runtime === ToolRuntime.SERVER ? "server" : "device"})`).join(", ") || "none"}`, "plugin-tools");
    const state = el("div", undefined, "plugin-state");
    if (p.suspended) state.textContent = `Suspended: your tier is below ${tierName(p.minTier)}; upgrade to use it again.`;
    else if (p.installed) state.textContent = "Installed";
    const button = el("button", p.installed ? "Uninstall" : "Install");
    button.type = "button";
    button.className = p.installed ? "uninstall" : "install";
    button.addEventListener("click", () => void (p.installed ? uninstall(p, li) : install(p, li)));
    const note = el("div", undefined, "plugin-note");
    li.append(head, el("div", p.description), facts, tools, state, button, note);
    return li;
  }

  async function refreshRow(pluginId: string, li: HTMLLIElement) {
    const res = await session.withRefresh(() => plugins.getPlugin({ name: `plugins/${pluginId}` }));
    if (res.plugin) li.replaceWith(row(res.plugin));
  }

  async function install(p: Plugin, li: HTMLLIElement) {
    const note = li.querySelector<HTMLElement>(".plugin-note")!;
    note.classList.remove("error");
    note.textContent = "Installing…";
    try {
      const key = idempotencyKey();
      await session.withRefresh(() => plugins.install({ pluginId: p.pluginId, idempotencyKey: key }));
      await refreshRow(p.pluginId, li);
      say(`${p.displayName} installed: your assistant can use its tools now.`);
    } catch (err) {
      const e = ConnectError.from(err);
      // FAILED_PRECONDITION names the tier needed; the person can act on it by upgrading.
      note.textContent = e.code === Code.FailedPrecondition ? e.rawMessage : describeError(err);
      note.classList.add("error");
      li.dataset.needsTier = e.code === Code.FailedPrecondition ? tierName(p.minTier) : "";
    }
  }

  async function uninstall(p: Plugin, li: HTMLLIElement) {
    const note = li.querySelector<HTMLElement>(".plugin-note")!;
    note.classList.remove("error");
    note.textContent = "Uninstalling…";
    try {
      await session.withRefresh(() => plugins.uninstall({ pluginId: p.pluginId }));
      await refreshRow(p.pluginId, li);
      say(`${p.displayName} uninstalled.`);
    } catch (err) {
      note.textContent = describeError(err);
      note.classList.add("error");
    }
  }

  /** Lists the first page for the current filters (or the next page, with `append`). */
  async function load(append = false) {
    const mine = append ? generation : ++generation;
    if (!append) nextPageToken = "";
    say("Loading…");
    try {
      const res = await session.withRefresh(() => plugins.listPlugins({ ...filters(), pageSize: 20, pageToken: nextPageToken }));
      if (mine !== generation) return; // a newer search started meanwhile
      noteCategories(res.plugins);
      const rows = res.plugins.map(row);
      if (append) list.append(...rows);
      else list.replaceChildren(...rows);
      nextPageToken = res.nextPageToken;
      more.hidden = nextPageToken === "";
      say(list.children.length === 0 ? "No plugin matches." : "");
    } catch (err) {
      if (mine === generation) say(`Could not list plugins: ${describeError(err)}`, true);
    }
  }

  function clear() {
    generation++;
    list.replaceChildren();
    nextPageToken = "";
    more.hidden = true;
    say("");
  }

  byId("plugins-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void load();
  });
  category.addEventListener("change", () => void load());
  byId("plugins-installed-only").addEventListener("change", () => void load());
  more.addEventListener("click", () => void load(true));

  // The page shows #signed-in while someone is signed in: the panel follows it.
  const signedIn = byId("signed-in");
  const follow = () => {
    panel.hidden = signedIn.hidden;
    if (signedIn.hidden) clear();
    else void load();
  };
  new MutationObserver(follow).observe(signedIn, { attributes: true, attributeFilter: ["hidden"] });
  follow();
}
