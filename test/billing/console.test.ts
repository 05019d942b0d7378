/**
 * The console's subscription panel in headless Chromium, against `npm
 * start`'s entry point (every module) and the local Stripe server: a person
 * registers, sees the free tier, presses Upgrade, pays on the checkout page
 * in the new tab, and the panel shows pro once Stripe's webhook landed.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { after, before, test } from "node:test";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { ensureChromium, launchChromium } from "../edge/chromium.js";
import { freePort } from "../support/infra.js";
import { startBilling, type BillingUnderTest } from "./support.js";

let b: BillingUnderTest;
before(
  async () => {
    ensureChromium();
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    // SERVICES empty: every module, the console included (built on the first request).
    b = await startBilling({ port, env: { SERVICES: "", BILLING_ALLOWED_REDIRECT_ORIGINS: origin, RATE_LIMIT_ENABLED: "false" } });
  },
  { timeout: 600_000 },
);
after(async () => {
  await b?.stop();
});

test("register, upgrade, pay in the checkout tab: the panel shows pro; then a change to power in place", { timeout: 180_000 }, async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(String(err)));
    await page.goto(`${b.platform.baseUrl}/`, { timeout: 120_000 });
    await page.fill("#email", `console-${randomBytes(4).toString("hex")}@example.com`);
    await page.fill("#password", "correct horse battery staple");
    await page.fill("#display-name", "Grace Hopper");
    await page.click("#register");
    await page.locator("#status", { hasText: "Signed in as Grace Hopper" }).waitFor({ timeout: 15_000 });
    await page.locator('#billing dd[data-field="billing-tier"]', { hasText: "free" }).waitFor({ timeout: 15_000 });
    await page.locator('#billing dd[data-field="billing-status"]', { hasText: "none" }).waitFor();

    await page.selectOption("#billing-tier-choice", "2");
    const [checkout] = await Promise.all([browser.context.waitForEvent("page"), page.click("#billing-upgrade")]);
    await checkout.waitForURL(/\/checkout\/cs_test_/, { timeout: 15_000 });
    assert.match(await checkout.locator("#price").textContent() ?? "", /price_pro/);
    await checkout.click("#pay");
    // Back on the console's success page, in the checkout tab.
    await checkout.waitForURL(/\?billing=paid$/, { timeout: 15_000 });
    await checkout.locator("#status", { hasText: "Payment received" }).waitFor({ timeout: 15_000 });
    await checkout.close();

    await page.locator('#billing dd[data-field="billing-tier"]', { hasText: "pro" }).waitFor({ timeout: 30_000 });
    await page.locator('#billing dd[data-field="billing-status"]', { hasText: "active" }).waitFor();
    await page.locator("#billing-cancel").waitFor({ state: "visible" });

    // Paying already: another tier is a change in place, no checkout tab.
    const tabs = browser.context.pages().length;
    await page.selectOption("#billing-tier-choice", String(Tier.POWER));
    await page.click("#billing-upgrade");
    await page.locator('#billing dd[data-field="billing-tier"]', { hasText: "power" }).waitFor({ timeout: 15_000 });
    assert.equal(browser.context.pages().length, tabs, "no checkout tab opened");
    assert.equal([...b.stripe.subscriptions.values()].length, 1, "still one subscription at Stripe");
    mkdirSync("test-results", { recursive: true });
    await page.screenshot({ path: "test-results/billing-console.png", fullPage: true }).catch(() => undefined);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
