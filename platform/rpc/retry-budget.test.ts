import { Code } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { test } from "node:test";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createRetryBudget, isRetrySafe } from "./retry-budget.js";

const safe = TestingService.method.unaryCall; // NO_SIDE_EFFECTS in the proto
const unsafe = TestingService.method.echoNested; // no idempotency declared

test("only UNAVAILABLE on a method the proto marks idempotent is retried, up to the attempt limit", () => {
  assert.equal(isRetrySafe(safe), true);
  assert.equal(isRetrySafe(unsafe), false);
  const b = createRetryBudget({ maxAttempts: 3 });
  assert.equal(b.mayRetry(safe, Code.Unavailable, 1), true);
  assert.equal(b.mayRetry(safe, Code.Unavailable, 3), false, "the third attempt was the last");
  assert.equal(b.mayRetry(unsafe, Code.Unavailable, 1), false);
  for (const code of [Code.DeadlineExceeded, Code.Internal, Code.ResourceExhausted, Code.Aborted]) {
    assert.equal(b.mayRetry(safe, code, 1), false, Code[code]);
  }
});

test("a failing target exhausts the budget; successes refill it", () => {
  const b = createRetryBudget({ maxTokens: 10, tokenRatio: 0.5 });
  let failures = 0;
  while (b.mayRetry(safe, Code.Unavailable, 1)) {
    b.record(Code.Unavailable);
    failures++;
  }
  assert.equal(failures, 5, "retries stop once half the tokens are spent");
  b.record(undefined); // 5.5 tokens: above half again
  assert.equal(b.mayRetry(safe, Code.Unavailable, 1), true);
});

test("backoff is jittered, grows, and is capped", () => {
  const b = createRetryBudget({ initialBackoffMs: 20 });
  for (let i = 0; i < 100; i++) {
    assert.ok(b.backoffMs(1) <= 20);
    assert.ok(b.backoffMs(3) <= 80);
    assert.ok(b.backoffMs(20) <= 1000);
  }
});
