import assert from "node:assert/strict";
import { test } from "node:test";
import { splitRevenue } from "./revenue.js";

test("a split always adds up to the price, with the publisher's part rounded down", () => {
  assert.deepEqual(splitRevenue(499n), { publisher: 349n, platform: 150n });
  assert.deepEqual(splitRevenue(1n), { publisher: 0n, platform: 1n });
  assert.deepEqual(splitRevenue(1000n), { publisher: 700n, platform: 300n });
  for (let p = 1n; p < 2000n; p++) {
    const s = splitRevenue(p);
    assert.equal(s.publisher + s.platform, p);
    assert.ok(s.publisher >= 0n && s.platform >= 0n);
  }
});

test("a free install has nothing to split", () => {
  assert.throws(() => splitRevenue(0n), RangeError);
});
