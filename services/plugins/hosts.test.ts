import assert from "node:assert/strict";
import { test } from "node:test";
import { endpointRefusal, parseAllowedHost } from "./hosts.js";

test("allowed hosts: a host allows any port, host:port one port", () => {
  const allowed = ["tools.example.com", "127.0.0.1:9000"].map(parseAllowedHost);
  assert.equal(endpointRefusal("https://tools.example.com/mcp", allowed), undefined);
  assert.equal(endpointRefusal("http://TOOLS.example.com:8443/mcp", allowed), undefined);
  assert.equal(endpointRefusal("http://127.0.0.1:9000/mcp", allowed), undefined);
  assert.match(endpointRefusal("http://127.0.0.1:9001/mcp", allowed)!, /not in PLUGINS_ALLOWED_HOSTS/);
  assert.match(endpointRefusal("http://evil.example.com/mcp", allowed)!, /evil\.example\.com/);
  assert.match(endpointRefusal("http://tools.example.com.evil.net/mcp", allowed)!, /not in PLUGINS_ALLOWED_HOSTS/);
});

test("endpoints that are not plain http(s) URLs are refused", () => {
  const allowed = [parseAllowedHost("tools.example.com")];
  assert.match(endpointRefusal("file:///etc/passwd", allowed)!, /http\(s\)/);
  assert.match(endpointRefusal("https://u:p@tools.example.com/", allowed)!, /credentials/);
  assert.match(endpointRefusal("not a url", allowed)!, /not a URL/);
});

test("PLUGINS_ALLOWED_HOSTS entries are checked", () => {
  assert.deepEqual(parseAllowedHost("[::1]:80"), { host: "[::1]", port: "80" });
  assert.throws(() => parseAllowedHost("http://x"), /not a host/);
  assert.throws(() => parseAllowedHost("a/b"), /not a host/);
});
