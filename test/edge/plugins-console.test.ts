/**
 * The console's plugin marketplace in headless Chromium against `npm start`
 * (every service in one process, its own PostgreSQL database and
 * nats-server): a person registers, browses the seeded marketplace with
 * search, a category and "installed only", installs and uninstalls a plugin
 * (seeing its state change), and is told which tier a pro plugin needs.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ensureChromium, launchChromium } from "./chromium.js";
import { startNpmStart, type NpmStart } from "./npm-start.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let app: NpmStart;

before(
  async () => {
    // Installing the browser on a fresh machine can take minutes: done here, outside any test's timeout.
    ensureChromium();
    app = await startNpmStart({ RATE_LIMIT_ENABLED: "false" });
  },
  { timeout: 900_000 },
);
after(async () => {
  await app?.stop();
});

test("browse, search, install and uninstall plugins; a pro plugin names the tier it needs", async () => {
  const browser = await launchChromium();
  const page = await browser.context.newPage();
  const pageErrors: string[] = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  const plugin = (id: string) => page.locator(`#plugins li[data-plugin-id="${id}"]`);
  const listed = () => page.locator("#plugins li").evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.pluginId));
  try {
    await page.goto(`${app.baseUrl}/`);
    assert.equal(await page.locator("#plugins-panel").isHidden(), true, "hidden while signed out");
    await page.fill("#email", `plugins-${randomBytes(4).toString("hex")}@example.com`);
    await page.fill("#password", "a long enough password");
    await page.click("#register");
    await page.locator("#status", { hasText: "Signed in" }).waitFor({ timeout: 15_000 });

    // The seeded marketplace, with prices and tiers.
    await plugin("files-pro").waitFor({ timeout: 15_000 });
    assert.deepEqual((await listed()).sort(), ["calendar", "clipboard", "files-pro"]);
    const filesPro = (await plugin("files-pro").textContent())!;
    assert.match(filesPro, /pro tier or higher/);
    assert.match(filesPro, /4[.,]99/);
    assert.match(filesPro, /files\.delete \(device\)/);
    assert.equal(await plugin("clipboard").getAttribute("data-state"), "available");

    // Search, then a category (offered from what was listed).
    await page.fill("#plugins-query", "clipboard");
    await page.click("#plugins-search-button");
    await page.waitForFunction(() => document.querySelectorAll("#plugins li").length === 1);
    assert.deepEqual(await listed(), ["clipboard"]);
    await page.fill("#plugins-query", "");
    await page.selectOption("#plugins-category", "productivity");
    await page.waitForFunction(() => !document.querySelector('#plugins li[data-plugin-id="clipboard"]') && document.querySelectorAll("#plugins li").length === 2);
    assert.deepEqual((await listed()).sort(), ["calendar", "files-pro"]);
    await page.selectOption("#plugins-category", "");
    await plugin("clipboard").waitFor();

    // Install: the row shows it installed, with the count up and an Uninstall button.
    await plugin("clipboard").locator("button.install").click();
    await page.locator('#plugins li[data-plugin-id="clipboard"][data-state="installed"]').waitFor({ timeout: 15_000 });
    assert.match((await plugin("clipboard").textContent())!, /1 installs/);
    await page.locator("#plugins-message", { hasText: "Clipboard installed" }).waitFor();

    // Installed only.
    await page.check("#plugins-installed-only");
    await page.waitForFunction(() => document.querySelectorAll("#plugins li").length === 1);
    assert.deepEqual(await listed(), ["clipboard"]);
    await page.uncheck("#plugins-installed-only");
    await plugin("files-pro").waitFor();

    // A pro plugin for a free user: the server's message names the tier.
    await plugin("files-pro").locator("button.install").click();
    await plugin("files-pro").locator(".plugin-note.error", { hasText: "pro tier" }).waitFor({ timeout: 15_000 });
    assert.equal(await plugin("files-pro").getAttribute("data-state"), "available");
    assert.equal(await plugin("files-pro").getAttribute("data-needs-tier"), "pro");

    // Uninstall.
    await plugin("clipboard").locator("button.uninstall").click();
    await page.locator('#plugins li[data-plugin-id="clipboard"][data-state="available"]').waitFor({ timeout: 15_000 });
    assert.match((await plugin("clipboard").textContent())!, /0 installs/);

    // Signing out hides and empties the panel.
    await page.click("#logout");
    await page.locator("#plugins-panel").waitFor({ state: "hidden" });
    assert.equal(await page.locator("#plugins li").count(), 0);
    assert.deepEqual(pageErrors, []);
  } finally {
    mkdirSync(join(root, "test-results"), { recursive: true });
    await page.screenshot({ path: join(root, "test-results", "plugins-console.png"), fullPage: true }).catch(() => undefined);
    await browser.close();
  }
});
