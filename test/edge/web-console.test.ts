/**
 * The console's static files as `npm start` serves them at "/": the built
 * page and its assets with the right types and caching, the app for paths
 * without a file, 404 for missing files and for paths outside web/dist, and a
 * missing build made on the first request.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createLogger } from "../../platform/log.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { consoleRoute, createStaticRoute } from "../../web/static.js";

const tmp = mkdtempSync(join(tmpdir(), "sy-web-"));
const dist = join(tmp, "dist");
let proc: RunningProcess;
let base: string;

before(async () => {
  // A fresh, missing build folder: the first request must build it.
  const settings = readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", SHUTDOWN_GRACE_MS: "1000" });
  const module = { name: "web", summary: "console", serves: [], routes: [consoleRoute], start: () => ({ services: [], routes: [createStaticRoute({ dir: dist })] }) };
  proc = await startProcess([module], settings, createLogger("silent"));
  base = `http://127.0.0.1:${proc.port}`;
});
after(async () => {
  await proc.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** Sends a request line as written (no URL normalisation by a client). */
function raw(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proc.port, "127.0.0.1", () => socket.end(`GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`));
    let text = "";
    socket.on("data", (c) => (text += c.toString("latin1")));
    socket.on("end", () => resolve(text));
    socket.on("error", reject);
  });
}

test("GET / builds the missing console once and serves its page", async () => {
  assert.equal(existsSync(dist), false);
  const [a, b] = await Promise.all([fetch(`${base}/`), fetch(`${base}/`)]);
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);
  assert.match(a.headers.get("content-type")!, /^text\/html/);
  const html = await a.text();
  assert.match(html, /<title>Switchyard console<\/title>/);
  assert.equal(html, await b.text());
  assert.ok(existsSync(join(dist, "index.html")));
  assert.equal(a.headers.get("cache-control"), "no-cache");
  assert.match(a.headers.get("content-security-policy")!, /default-src 'self'/);
  assert.equal(a.headers.get("x-content-type-options"), "nosniff");
});

test("the page's assets are served with their types and cached for good", async () => {
  const html = await (await fetch(`${base}/`)).text();
  const script = /<script[^>]+src="([^"]+\.js)"/.exec(html)?.[1];
  const style = /<link[^>]+href="([^"]+\.css)"/.exec(html)?.[1];
  assert.ok(script && style, "index.html names a script and a stylesheet");
  const js = await fetch(`${base}${script}`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get("content-type")!, /^text\/javascript/);
  assert.match(js.headers.get("cache-control")!, /immutable/);
  assert.match(await js.text(), /grpc-web|application\/grpc-web/, "the bundle speaks gRPC-Web");
  const css = await fetch(`${base}${style}`);
  assert.match(css.headers.get("content-type")!, /^text\/css/);
});

test("a path with no file is the app; a missing file is 404; other methods 405", async () => {
  const app = await fetch(`${base}/devices/recent`);
  assert.equal(app.status, 200);
  assert.match(await app.text(), /Switchyard console/);
  assert.equal((await fetch(`${base}/assets/nope-123.js`)).status, 404);
  assert.equal((await fetch(`${base}/`, { method: "POST", body: "x" })).status, 405);
  const head = await fetch(`${base}/`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal((await head.arrayBuffer()).byteLength, 0);
});

test("paths that climb out of web/dist are refused", async () => {
  for (const path of ["/../package.json", "/%2e%2e/package.json", "/assets/..%2f..%2f..%2fpackage.json", "/%2e%2e%2f%2e%2e%2fetc/passwd"]) {
    const res = await raw(path);
    assert.match(res, /^HTTP\/1\.1 (400|404) /, `${path}: ${res.split("\r\n")[0]}`);
    assert.doesNotMatch(res, /"name": "switchyard"|root:/);
  }
  assert.match(await raw("/%E0%A4%A"), /^HTTP\/1\.1 400 /, "a malformed escape is a bad request");
});

test("the checkout's build counts as stale once a source is newer, and fresh after a build", async () => {
  const { buildWebConsole, needsBuild, webDist } = await import("../../web/static.js");
  const { statSync, utimesSync } = await import("node:fs");
  if (needsBuild(webDist)) await buildWebConsole(webDist);
  assert.equal(needsBuild(webDist), false);
  const index = join(webDist, "index.html");
  const { atime, mtime } = statSync(index);
  utimesSync(index, atime, new Date("2000-01-01T00:00:00Z")); // older than every source
  try {
    assert.equal(needsBuild(webDist), true);
  } finally {
    utimesSync(index, atime, mtime);
  }
  assert.equal(needsBuild(dist), false, "a build outside web/ (e.g. an image's) is never judged by the checkout's sources");
  assert.equal(needsBuild(join(tmp, "nowhere")), true);
});
