/**
 * The console's storage panel in headless Chromium against `npm start`: a
 * person saves a record (encrypted in the browser: the server's row holds
 * neither the text nor the browser's key), finds a remembered sentence by
 * vector search (the built-in feature-hashing embedder, named as such),
 * takes a backup, deletes the record, and restores it.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { ensureChromium, launchChromium } from "./chromium.js";
import { startNpmStart, type NpmStart } from "./npm-start.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let app: NpmStart;

before(
  async () => {
    ensureChromium();
    app = await startNpmStart({ RATE_LIMIT_ENABLED: "false" });
  },
  { timeout: 900_000 },
);
after(async () => {
  await app?.stop();
});

test("records, vector search and backups in the console", { timeout: 300_000 }, async () => {
  const browser = await launchChromium();
  const errors: string[] = [];
  try {
    const page = await browser.context.newPage();
    page.on("pageerror", (err) => errors.push(String(err)));
    await page.goto(`${app.baseUrl}/`);
    await page.fill("#email", `store-${randomBytes(4).toString("hex")}@example.com`);
    await page.fill("#password", "correct horse battery");
    await page.fill("#display-name", "Grace");
    await page.click("#register");
    await page.locator("#status", { hasText: "Signed in as Grace" }).waitFor({ timeout: 30_000 });
    await page.locator("#storage-panel").waitFor({ state: "visible" });

    const secret = "meet at the lighthouse at dawn";
    await page.fill("#record-text", secret);
    await page.fill("#record-label", "plans");
    await page.click("#save-record");
    await page.locator("#records tr", { hasText: secret }).waitFor({ timeout: 15_000 });
    await page.locator("#records tr", { hasText: "tag=plans" }).waitFor();

    const sql = postgres(app.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
    try {
      const rows = await sql<{ body: Buffer; key_id: string }[]>`select body, key_id from storage.records`;
      assert.equal(rows.length, 1);
      assert.match(rows[0]!.key_id, /^console-[0-9a-f]{12}$/);
      assert.ok(!rows[0]!.body.includes(Buffer.from("lighthouse")));
    } finally {
      await sql.end();
    }

    for (const sentence of ["the quarterly tax return is due in April", "grandma's apple pie recipe with cinnamon"]) {
      await page.fill("#memory-text", sentence);
      await page.click("#remember");
      await page.locator("#storage-status", { hasText: "Remembered with feature-hashing" }).waitFor({ timeout: 15_000 });
    }
    await page.fill("#search-text", "apple pie");
    await page.click("#search");
    await page.locator("#storage-status", { hasText: "embeddings by feature-hashing" }).waitFor({ timeout: 15_000 });
    const first = await page.locator("#search-results li").first().textContent();
    assert.match(first!, /apple pie recipe/);

    await page.fill("#backup-description", "before cleanup");
    await page.click("#create-backup");
    await page.locator("#backups li", { hasText: "before cleanup: 1 records, 2 vectors" }).waitFor({ timeout: 15_000 });
    await page.locator("#records tr", { hasText: secret }).locator("button").click();
    await page.locator("#records tr", { hasText: secret }).waitFor({ state: "detached", timeout: 15_000 });
    await page.locator("#backups li", { hasText: "before cleanup" }).locator("button").click();
    await page.locator("#storage-status", { hasText: "Restored: 1 records, 2 vectors" }).waitFor({ timeout: 15_000 });
    await page.locator("#records tr", { hasText: secret }).waitFor({ timeout: 15_000 });

    mkdirSync(join(root, "test-results"), { recursive: true });
    await page.screenshot({ path: join(root, "test-results", "storage-console.png"), fullPage: true }).catch(() => undefined);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
