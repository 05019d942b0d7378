import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "./config.js";
import { createServiceUrls } from "./service-urls.js";
import type { ServiceModule } from "./service.js";

const module = (name: string, calls: string[] = []): ServiceModule => ({ name, summary: "", serves: [], calls, start: () => ({ services: [] }) });

test("a called module running in this process is reached on this process's port; elsewhere through <NAME>_URL", () => {
  const caller = module("chat", ["gateway", "plugins"]);
  const url = createServiceUrls(caller, [caller, module("gateway")], 8080, { PLUGINS_URL: "http://plugins:8080" });
  assert.equal(url("gateway"), "http://127.0.0.1:8080");
  assert.equal(url("plugins"), "http://plugins:8080");
});

test("a module elsewhere without its variable, a bad URL and an undeclared call are refused, naming what to fix", () => {
  const caller = module("chat", ["gateway"]);
  assert.throws(() => createServiceUrls(caller, [caller], 8080, {})("gateway"), (e: unknown) => e instanceof ConfigError && /GATEWAY_URL is required/.test(e.message));
  assert.throws(() => createServiceUrls(caller, [caller], 8080, { GATEWAY_URL: "not a url" })("gateway"), /GATEWAY_URL: expected a URL/);
  assert.throws(() => createServiceUrls(caller, [caller], 8080, {})("storage"), /without declaring it in `calls`/);
});
