/**
 * `npm run dlq -- list` on a fresh install: a nats-server with an empty
 * JetStream store, so the dead-letter stream is created empty (first_seq 0).
 * It says there are none and exits 0, in both output forms.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { startNats, type OwnNats } from "../support/infra.js";

const run = promisify(execFile);
let nats: OwnNats;

before(async () => {
  nats = await startNats();
});
after(async () => {
  await nats?.kill();
});

test("dlq list on a fresh JetStream store says there are no dead letters and exits 0", async () => {
  const env = { ...process.env, NATS_URL: nats.url };
  const listed = await run(process.execPath, ["--import", "tsx", "scripts/dlq.ts", "list"], { env });
  assert.equal(listed.stdout, "no dead letters\n");
  const json = await run(process.execPath, ["--import", "tsx", "scripts/dlq.ts", "list", "--json"], { env });
  assert.deepEqual(JSON.parse(json.stdout), []);
});
