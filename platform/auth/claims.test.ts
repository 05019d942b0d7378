/** Tier names, alone: derived from the contract's Tier enum. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { tierClaim, tierFromClaim, TIERS } from "./claims.js";

test("TIERS lists every tier of tier.proto but UNSPECIFIED, by lower-case name", () => {
  assert.deepEqual(TIERS.map((t) => t.name), ["free", "pro", "power", "team"]);
  assert.deepEqual(TIERS.map((t) => t.tier), [Tier.FREE, Tier.PRO, Tier.POWER, Tier.TEAM]);
});

test("claims map both ways; anything else is undefined", () => {
  for (const { tier, name } of TIERS) {
    assert.equal(tierClaim(tier), name);
    assert.equal(tierFromClaim(name), tier);
  }
  assert.equal(tierClaim(Tier.UNSPECIFIED), undefined);
  for (const bad of ["FREE", "unspecified", "", 1, null]) assert.equal(tierFromClaim(bad), undefined);
});
