/**
 * The console's storage panel: the user's records (encrypted in this
 * browser before upload, as the contract expects of every client), a
 * "memory" vector collection searched by text (EmbedText, then
 * SearchVectors), and backups (create, list, restore).
 *
 * The browser's record key is an AES-GCM key kept in localStorage (key_id
 * "console-<fingerprint>"); records under another key are listed but not
 * opened here. The server never sees it.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { BackupService, type Backup } from "../../gen/switchyard/storage/v1/backup_pb.js";
import { RecordService, RecordView, type Record as StoredRecord } from "../../gen/switchyard/storage/v1/record_pb.js";
import { VectorService } from "../../gen/switchyard/storage/v1/vector_pb.js";
import { describeError, type Session } from "./api.js";

const KEY_STORAGE = "switchyard.console.record-key";
const COLLECTION = "memory";

interface RecordKey {
  readonly id: string;
  readonly key: CryptoKey;
}

const el = <T extends HTMLElement = HTMLElement>(id: string) => {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing from index.html`);
  return found as T;
};

function cell(text: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

/** This browser's record key, made on first use. */
async function recordKey(): Promise<RecordKey> {
  let raw = localStorage.getItem(KEY_STORAGE);
  if (raw === null) {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    raw = btoa(String.fromCharCode(...bytes));
    localStorage.setItem(KEY_STORAGE, raw);
  }
  const bytes = Uint8Array.from(atob(raw), (c) => c.charCodeAt(0));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const id = `console-${Array.from(digest.slice(0, 6), (b) => b.toString(16).padStart(2, "0")).join("")}`;
  return { id, key: await crypto.subtle.importKey("raw", bytes, "AES-GCM", false, ["encrypt", "decrypt"]) };
}

async function encrypt(k: RecordKey, text: string): Promise<Uint8Array> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, k.key, new TextEncoder().encode(text)));
  const out = new Uint8Array(iv.length + ct.length);
  out.set(iv);
  out.set(ct, iv.length);
  return out;
}

async function decrypt(k: RecordKey, r: StoredRecord): Promise<string> {
  if (r.keyId !== k.id) return `(encrypted with key ${r.keyId}, not this browser's)`;
  const pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv: r.ciphertext.slice(0, 12) }, k.key, r.ciphertext.slice(12));
  return new TextDecoder().decode(pt);
}

/** Wires the storage panel to `session`; it shows while someone is signed in. */
export function mountStorage(session: Session): void {
  const records: Client<typeof RecordService> = createClient(RecordService, session.transport);
  const vectors: Client<typeof VectorService> = createClient(VectorService, session.transport);
  const backups: Client<typeof BackupService> = createClient(BackupService, session.transport);
  const panel = el("storage-panel");
  const status = el("storage-status");
  const say = (text: string, error = false) => {
    status.textContent = text;
    status.classList.toggle("error", error);
  };

  async function refreshRecords() {
    const k = await recordKey();
    const res = await session.withRefresh(() => records.listRecords({ pageSize: 50, view: RecordView.FULL }));
    const rows = await Promise.all(
      res.records.map(async (r) => {
        const tr = document.createElement("tr");
        tr.dataset.recordId = r.recordId;
        const labels = Object.entries(r.labels).map(([key, v]) => `${key}=${v}`).join(", ");
        tr.append(cell(await decrypt(k, r).catch(() => "(cannot decrypt)")), cell(labels), cell(String(r.sizeBytes)), cell(r.createTime ? new Date(Number(r.createTime.seconds) * 1000).toLocaleString() : ""));
        const del = document.createElement("button");
        del.type = "button";
        del.textContent = "Delete";
        del.addEventListener("click", () => void run(`Deleted.`, () => session.withRefresh(() => records.deleteRecord({ name: r.name, etag: r.etag }))));
        const td = document.createElement("td");
        td.append(del);
        tr.append(td);
        return tr;
      }),
    );
    el("records").replaceChildren(...rows);
  }

  function renderBackups(list: readonly Backup[]) {
    el("backups").replaceChildren(
      ...list.map((b) => {
        const li = document.createElement("li");
        li.dataset.backupId = b.backupId;
        li.textContent = `${b.description || "(no description)"}: ${b.recordCount} records, ${b.vectorCount} vectors, ${b.sizeBytes} bytes `;
        const restore = document.createElement("button");
        restore.type = "button";
        restore.textContent = "Restore (replaces current data)";
        restore.addEventListener("click", () =>
          void run("Restored.", async () => {
            const res = await session.withRefresh(() => backups.restoreBackup({ name: b.name }));
            say(`Restored: ${res.restoredRecordCount} records, ${res.restoredVectorCount} vectors.`);
          }),
        );
        li.append(restore);
        return li;
      }),
    );
  }

  async function refreshBackups() {
    renderBackups((await session.withRefresh(() => backups.listBackups({}))).backups);
  }

  /** Runs an action, reports its outcome, and refreshes the lists. */
  async function run(done: string, action: () => Promise<unknown>) {
    try {
      say("Working…");
      await action();
      if (status.textContent === "Working…") say(done);
      await Promise.all([refreshRecords(), refreshBackups()]);
    } catch (err) {
      say(describeError(err), true);
    }
  }

  el("record-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = el<HTMLTextAreaElement>("record-text").value;
    const label = el<HTMLInputElement>("record-label").value.trim();
    void run("Saved (encrypted in this browser).", async () => {
      const k = await recordKey();
      const labels: Record<string, string> = label ? { tag: label } : {};
      const ciphertext = await encrypt(k, text);
      await session.withRefresh(() => records.createRecord({ record: { ciphertext, keyId: k.id, contentType: "text/plain", labels } }));
      el<HTMLTextAreaElement>("record-text").value = "";
    });
  });

  el("memory-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = el<HTMLInputElement>("memory-text").value.trim();
    void run("Remembered.", async () => {
      const emb = await session.withRefresh(() => vectors.embedText({ texts: [text] }));
      const id = `m${Date.now().toString(36)}`;
      await session.withRefresh(() => vectors.upsertVectors({ collection: COLLECTION, vectors: [{ vectorId: id, embedding: emb.embeddings[0]!.values, labels: { text: text.slice(0, 256) } }] }));
      say(`Remembered with ${emb.provider} (${emb.model}).`);
    });
  });

  el("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = el<HTMLInputElement>("search-text").value.trim();
    void run("Searched.", async () => {
      const emb = await session.withRefresh(() => vectors.embedText({ texts: [text] }));
      const res = await session.withRefresh(() => vectors.searchVectors({ collection: COLLECTION, embedding: emb.embeddings[0]!.values, topK: 5 }));
      el("search-results").replaceChildren(
        ...res.matches.map((m) => {
          const li = document.createElement("li");
          li.textContent = `${m.score.toFixed(3)}  ${m.labels.text ?? m.vectorId}`;
          return li;
        }),
      );
      say(`${res.matches.length} matches (${res.method} search; embeddings by ${emb.provider}).`);
    });
  });

  el("create-backup").addEventListener("click", () =>
    void run("Backup taken.", () => session.withRefresh(() => backups.createBackup({ description: el<HTMLInputElement>("backup-description").value.trim() }))),
  );

  // Shown while signed in: follow the header's signed-in marker.
  const marker = el("signed-in");
  const sync = () => {
    panel.hidden = marker.hidden;
    if (!marker.hidden) void run("", async () => undefined).then(() => status.textContent === "" && say("Ready."));
    else el("records").replaceChildren();
  };
  new MutationObserver(sync).observe(marker, { attributes: true, attributeFilter: ["hidden"] });
  sync();
}
