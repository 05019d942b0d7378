/**
 * End to end against `npm start` (every service in one process, its own
 * PostgreSQL database and nats-server):
 * - gRPC-Web spoken by hand with plain fetch (no Connect library): the wire
 *   format a browser without our client can use;
 * - CORS on the running server;
 * - the console in headless Chromium: a person registers, logs in, sees
 *   themselves, sees a notification another client publishes appear live,
 *   and calls a tool on a device (a WebSocket client in this test) that
 *   answers; a screenshot is saved to test-results/.
 */
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { DeviceFrameSchema } from "../../gen/switchyard/device/v1/device_frame_pb.js";
import { Platform } from "../../gen/switchyard/device/v1/device_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { NotificationService } from "../../gen/switchyard/notify/v1/notify_pb.js";
import { readTopology } from "../../envoy/topology.js";
import { ensureChromium, launchChromium } from "./chromium.js";
import { decodeFields, encodeStrings, frame, unframe } from "./grpc-web-wire.js";
import { startNpmStart, type NpmStart } from "./npm-start.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const allowedOrigin = "https://console.example.com";
let app: NpmStart;

before(
  async () => {
    // Installing the browser on a fresh machine can take minutes: done here, outside any test's timeout.
    ensureChromium();
    app = await startNpmStart({ ALLOWED_ORIGINS: allowedOrigin, RATE_LIMIT_ENABLED: "false" });
  },
  { timeout: 900_000 },
);
after(async () => {
  await app?.stop();
});

/** A gRPC-Web call with plain fetch: hand-framed request, hand-read frames and trailers. */
async function grpcWebFetch(path: string, message: Uint8Array, headers: Record<string, string> = {}) {
  const res = await fetch(`${app.baseUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", accept: "application/grpc-web+proto", ...headers },
    body: frame(message),
  });
  assert.equal(res.status, 200, `${path}: HTTP ${res.status}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/grpc-web/);
  const reply = unframe(new Uint8Array(await res.arrayBuffer()));
  // A trailers-only reply carries the status in the HTTP headers instead.
  const status = reply.trailers["grpc-status"] ?? res.headers.get("grpc-status") ?? "";
  const message_ = decodeURIComponent(reply.trailers["grpc-message"] ?? res.headers.get("grpc-message") ?? "");
  return { ...reply, status, message: message_ };
}

const text = (v: Uint8Array | number | undefined) => (v instanceof Uint8Array ? new TextDecoder().decode(v) : "");

/**
 * A service token for the "other client" that publishes notifications
 * (Publish is internal), minted by auth's own tool against this server's
 * database and master key.
 */
function mintServiceToken(service: string): string {
  const scripts = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
  assert.ok(scripts["auth:service-token"], "waits for auth (issue 4): package.json has no `auth:service-token` script to mint a service token with");
  const res = spawnSync("npm", ["run", "--silent", "auth:service-token", "--", service], { cwd: root, env: { ...process.env, ...app.env }, encoding: "utf8" });
  assert.equal(res.status, 0, `npm run auth:service-token failed:\n${res.stderr}`);
  const token = res.stdout.split(/\s+/).find((w) => /^[\w-]+\.[\w-]+\.[\w-]+$/.test(w));
  assert.ok(token, `npm run auth:service-token printed no JWT:\n${res.stdout}`);
  return token;
}

const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };

describe("gRPC-Web with plain fetch, no client library", () => {
  test("grpc.health.v1.Health/Check answers SERVING", async () => {
    const reply = await grpcWebFetch(`/${Health.typeName}/Check`, encodeStrings({}));
    assert.equal(reply.status, "0", reply.message);
    assert.equal(reply.messages.length, 1);
    assert.equal(decodeFields(reply.messages[0]!).get(1)?.[0], 1, "status SERVING (1)");
  });

  test("Register, then GetMe with the token it returned", async () => {
    const email = `fetch-${randomBytes(4).toString("hex")}@example.com`;
    const reg = await grpcWebFetch(`/${AuthService.typeName}/Register`, encodeStrings({ 1: email, 2: "correct horse battery", 3: "Fetch Person" }));
    assert.equal(reg.status, "0", `Register: ${reg.message}`);
    const regFields = decodeFields(reg.messages[0]!);
    const user = decodeFields(regFields.get(1)![0] as Uint8Array);
    const tokens = decodeFields(regFields.get(2)![0] as Uint8Array);
    assert.equal(text(user.get(3)?.[0]), email);
    const accessToken = text(tokens.get(1)?.[0]);
    assert.match(accessToken, /^[\w-]+\.[\w-]+\.[\w-]+$/);

    const me = await grpcWebFetch(`/${AuthService.typeName}/GetMe`, new Uint8Array(), { authorization: `Bearer ${accessToken}` });
    assert.equal(me.status, "0", `GetMe: ${me.message}`);
    const meUser = decodeFields(decodeFields(me.messages[0]!).get(1)![0] as Uint8Array);
    assert.equal(text(meUser.get(3)?.[0]), email);
    assert.equal(text(meUser.get(4)?.[0]), "Fetch Person");
  });

  test("GetMe without a token is UNAUTHENTICATED, readable in the trailers", async () => {
    const reply = await grpcWebFetch(`/${AuthService.typeName}/GetMe`, new Uint8Array());
    assert.equal(reply.status, "16");
    assert.ok(reply.message.length > 0, "grpc-message says why");
  });
});

describe("the HTTP routes Envoy sends to modules", () => {
  test("are served by npm start, each with a declared method (JWKS with keys)", async () => {
    const topology = await readTopology(root);
    for (const m of topology.modules) {
      for (const r of m.httpRoutes) {
        if (r.websocket || r.match === "prefix") continue; // /ws/device and the console are exercised below
        const method = r.methods[0]!;
        const res = await fetch(`${app.baseUrl}${r.path}`, { method, body: method === "GET" ? undefined : "{}" });
        // 404/405: only the console's GET catch-all matched, so nobody serves the path.
        assert.ok(res.status !== 404 && res.status !== 405, `${m.name} serves ${method} ${r.path} (got HTTP ${res.status})`);
        if (r.path === "/.well-known/jwks.json") {
          const jwks = (await res.json()) as { keys?: unknown[] };
          assert.ok(Array.isArray(jwks.keys) && jwks.keys.length > 0, "JWKS lists the signing keys");
        }
      }
    }
  });
});

describe("CORS on npm start", () => {
  const preflight = (origin: string) =>
    new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(`${app.baseUrl}/${AuthService.typeName}/Login`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type,x-grpc-web,authorization" },
      });
      req.on("response", (res) => {
        res.resume();
        resolve(res);
      });
      req.on("error", reject);
      req.end();
    });

  test("a preflight from the allowed origin gets the headers; another origin gets no Access-Control-Allow-Origin", async () => {
    const ok = await preflight(allowedOrigin);
    assert.equal(ok.statusCode, 204);
    assert.equal(ok.headers["access-control-allow-origin"], allowedOrigin);
    assert.match(String(ok.headers["access-control-allow-headers"]), /authorization/i);
    assert.equal(ok.headers["access-control-allow-credentials"], undefined);
    const denied = await preflight("https://elsewhere.example.net");
    assert.equal(denied.headers["access-control-allow-origin"], undefined);
  });
});

/** A device client: offers `echo.reverse`, answers each call with the reversed text. */
async function connectDevice(accessToken: string, deviceId: string) {
  const url = `${app.baseUrl.replace(/^http/, "ws")}/ws/device`;
  const ws = new WebSocket(url, ["switchyard.device.v1+proto"], { headers: { authorization: `Bearer ${accessToken}` } });
  const calls: string[] = [];
  const send = (f: MessageInitShape<typeof DeviceFrameSchema>["frame"]) => ws.send(toBinary(DeviceFrameSchema, create(DeviceFrameSchema, { frame: f })));
  const welcomed = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no welcome frame within 15 s")), 15_000);
    ws.on("error", (err) => (clearTimeout(timer), reject(err)));
    ws.on("unexpected-response", (_req, res) => (clearTimeout(timer), reject(new Error(`/ws/device answered HTTP ${res.statusCode}`))));
    ws.on("message", (data: Buffer) => {
      const f = fromBinary(DeviceFrameSchema, data).frame;
      if (f.case === "welcome") (clearTimeout(timer), resolve());
      if (f.case === "ping") send({ case: "pong", value: { nonce: f.value.nonce } });
      if (f.case === "toolCall") {
        calls.push(f.value.tool);
        const input = String(f.value.arguments?.text ?? "");
        send({ case: "toolResult", value: { callId: f.value.callId, outcome: { case: "result", value: { reversed: [...input].reverse().join("") } } } });
      }
    });
  });
  ws.once("open", () =>
    send({
      case: "hello",
      value: { deviceId, deviceName: "E2E laptop", platform: Platform.LINUX, appVersion: "1.0.0", tools: [{ name: "echo.reverse", description: "Reverses text" }] },
    }),
  );
  await welcomed;
  return { calls, close: () => ws.close() };
}

describe("the console in headless Chromium", () => {
  test("register, log in, see yourself, a live notification, and a tool call answered by a device", async () => {
    const browser = await launchChromium();
    let device: Awaited<ReturnType<typeof connectDevice>> | undefined;
    const email = `person-${randomBytes(4).toString("hex")}@example.com`;
    const password = "a long enough password";
    const page = await browser.context.newPage();
    const consoleErrors: string[] = [];
    page.on("pageerror", (err) => consoleErrors.push(String(err)));
    try {
      await page.goto(`${app.baseUrl}/`);
      assert.equal(await page.title(), "Switchyard console");

      // Register.
      await page.fill("#email", email);
      await page.fill("#password", password);
      await page.fill("#display-name", "Ada Lovelace");
      await page.click("#register");
      await page.locator("#status", { hasText: "Signed in as Ada Lovelace" }).waitFor({ timeout: 15_000 });

      // Log out, then log in again.
      await page.click("#logout");
      await page.locator("#status", { hasText: "Signed out." }).waitFor();
      await page.fill("#email", email);
      await page.fill("#password", password);
      await page.click("#login");
      await page.locator("#status", { hasText: "Signed in as Ada Lovelace" }).waitFor({ timeout: 15_000 });

      // GetMe shows the person.
      await page.locator('#me dd[data-field="email"]', { hasText: email }).waitFor();
      const userId = (await page.locator('#me dd[data-field="user-id"]').textContent())!.trim();
      assert.match(userId, /\S/);

      // A device of the person connects; the page lists it and calls its tool.
      const login = await createClient(AuthService, createGrpcTransport({ baseUrl: app.baseUrl })).login({ email, password });
      device = await connectDevice(login.tokens!.accessToken, "e2e-laptop");
      await page.click("#refresh-devices");
      await page.locator('#devices tr[data-device-id="e2e-laptop"]').waitFor({ timeout: 15_000 });
      await page.selectOption("#tool-device", "e2e-laptop");
      await page.fill("#tool-name", "echo.reverse");
      await page.fill("#tool-args", '{"text": "switchyard"}');
      await page.click("#call-tool");
      await page.locator("#tool-result", { hasText: "drayhctiws" }).waitFor({ timeout: 15_000 });
      assert.deepEqual(device.calls, ["echo.reverse"], "the device ran the call once");

      // Another client publishes; the feed shows it without a reload.
      await page.locator("#feed-state", { hasText: "(live)" }).waitFor({ timeout: 15_000 });
      const publisher = createClient(NotificationService, createGrpcTransport({ baseUrl: app.baseUrl, interceptors: [bearer(mintServiceToken("e2e-publisher"))] }));
      await publisher.publish({ userId, title: "Your report is ready", body: "Quarterly numbers, 12 pages.", kind: "agent.run_finished" });
      await page.locator("#notifications li", { hasText: "Your report is ready" }).waitFor({ timeout: 15_000 });
      assert.deepEqual(consoleErrors, []);
    } finally {
      mkdirSync(join(root, "test-results"), { recursive: true });
      await page.screenshot({ path: join(root, "test-results", "e2e-console.png"), fullPage: true }).catch(() => undefined);
      device?.close();
      await browser.close();
    }
  });
});
