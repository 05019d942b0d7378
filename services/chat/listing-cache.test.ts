import assert from "node:assert/strict";
import { test } from "node:test";
import { createListingCache } from "./listing-cache.js";

const never = new AbortController().signal;

test("an invalidation while a fetch is under way: the next get fetches again, the old answer is not kept", async () => {
  let version = 0;
  const releases: (() => void)[] = [];
  const cache = createListingCache(
    (user) => {
      const v = ++version;
      return new Promise<string>((resolve) => releases.push(() => resolve(`${user}@${v}`)));
    },
    { ttlMs: 60_000 },
  );
  const first = cache.get("u", never);
  cache.invalidate("u"); // the device connected while the gateway was being asked
  const second = cache.get("u", never);
  releases.forEach((r) => r());
  assert.equal(await first, "u@1", "a caller already waiting gets what it asked for");
  assert.equal(await second, "u@2");
  assert.equal(await cache.get("u", never), "u@2", "the answer fetched after the change is the one kept");
});

test("the least recently fetched user is dropped past maxUsers", async () => {
  let fetches = 0;
  const cache = createListingCache(async (user) => (fetches++, user), { ttlMs: 60_000, maxUsers: 2 });
  for (const u of ["a", "b", "c"]) await cache.get(u, never);
  await cache.get("b", never);
  await cache.get("c", never);
  assert.equal(fetches, 3, "b and c are kept");
  await cache.get("a", never);
  assert.equal(fetches, 4, "a was dropped");
});
