/** Log destinations, alone: one flush timer however many there are; lines reach the file. */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createLogDestination, createLogger, FLUSH_INTERVAL_MS, logFlushTimers } from "./log.js";

test("a hundred destinations share one flush timer, and a buffered line is written by it", async () => {
  const file = join(mkdtempSync(join(tmpdir(), "sy-log-")), "out.log");
  const loggers = Array.from({ length: 100 }, () => createLogger("info", createLogDestination(file)));
  assert.equal(logFlushTimers(), 1);
  loggers[0]!.info({ token: "secret-token" }, "hello");
  // The timer's tick is the event to wait for: at most one interval plus a margin.
  const until = Date.now() + 20 * FLUSH_INTERVAL_MS;
  while (!readFileSync(file, "utf8").includes('"msg":"hello"')) {
    assert.ok(Date.now() < until, "the buffered line was never flushed");
    await new Promise((r) => setTimeout(r, FLUSH_INTERVAL_MS / 4));
  }
  assert.ok(!readFileSync(file, "utf8").includes("secret-token"), "a token reached the log");
});
