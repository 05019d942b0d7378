/**
 * A Connect GET whose `base64=1` message is not base64 answers 400
 * `invalid_argument` on every RPC `npm start` serves (listed through its
 * server reflection), before any authentication, and the process keeps serving.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { startNpmStart, type NpmStart } from "./npm-start.js";

const run = promisify(execFile);
let app: NpmStart;
before(async () => {
  app = await startNpmStart({ RATE_LIMIT_ENABLED: "false" });
});
after(async () => {
  await app?.stop();
});

test("GET ?base64=1&message=!!!! answers 400 invalid_argument on every served RPC", async () => {
  const { stdout } = await run("node_modules/.bin/buf", ["curl", "--http2-prior-knowledge", "--protocol", "grpc", "--list-methods", app.baseUrl], { encoding: "utf8" });
  const methods = stdout.trim().split("\n");
  assert.ok(methods.includes("switchyard.auth.v1.AuthService/GetMe"), `reflection lists no AuthService/GetMe:\n${stdout}`);
  const wrong: string[] = [];
  for (const m of methods) {
    const res = await fetch(`${app.baseUrl}/${m}?connect=v1&encoding=proto&base64=1&message=!!!!`);
    const body = (await res.json().catch(() => ({}))) as { code?: string };
    if (res.status !== 400 || body.code !== "invalid_argument") wrong.push(`${m}: ${res.status} ${JSON.stringify(body)}`);
  }
  assert.deepEqual(wrong, []);
  const health = await fetch(`${app.baseUrl}/readyz`);
  assert.equal(health.status, 200, "the process stopped serving");
});
