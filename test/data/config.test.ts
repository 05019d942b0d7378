/**
 * The data variables are checked at start: a bad value stops the process with
 * a message naming the variable, and a URL that may carry a password is never
 * echoed.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../../platform/config.js";
import { readPlatformSettings } from "../../platform/settings.js";

test("bad DATABASE_URL, NATS_URL, pool size and rate limits are each named; secrets are not echoed", () => {
  assert.throws(
    () =>
      readPlatformSettings({
        DATABASE_URL: "mysql://admin:hunter2@db/app",
        NATS_URL: "http://nats:4222",
        DATABASE_POOL_MAX: "lots",
        RATE_LIMIT_FREE: "0",
        RATE_LIMIT_TEAM: "-5",
        RATE_LIMIT_ENABLED: "maybe",
      }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const byName = (name: string) => err.problems.find((p) => p.startsWith(`${name}:`));
      assert.match(byName("DATABASE_URL") ?? "", /^DATABASE_URL: invalid value \(not shown: secret\)/);
      assert.match(byName("NATS_URL") ?? "", /^NATS_URL: invalid value \(not shown: secret\)/);
      assert.match(byName("DATABASE_POOL_MAX") ?? "", /expected a whole number, got "lots"/);
      assert.match(byName("RATE_LIMIT_FREE") ?? "", /expected a number from 1 to 1000000, got 0/);
      assert.match(byName("RATE_LIMIT_TEAM") ?? "", /expected a number from 1 to 1000000, got -5/);
      assert.match(byName("RATE_LIMIT_ENABLED") ?? "", /expected true or false, got "maybe"/);
      assert.doesNotMatch(err.message, /hunter2/);
      return true;
    },
  );
});

test("defaults: embedded database and local NATS when unset, tier limits 20/60/120/200", () => {
  const s = readPlatformSettings({});
  assert.equal(s.DATABASE_URL, "");
  assert.equal(s.NATS_URL, "");
  assert.deepEqual([s.RATE_LIMIT_FREE, s.RATE_LIMIT_PRO, s.RATE_LIMIT_POWER, s.RATE_LIMIT_TEAM], [20, 60, 120, 200]);
  assert.equal(s.DATA_DIR, ".data");
});
