/** DATABASE_URL: one host or several (failover), checked host by host. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { databaseUrl } from "./vars.js";

test("one host, or several with target_session_attrs, are accepted as given", () => {
  for (const ok of [
    "postgres://u:p@db:5432/app",
    "postgresql://u@pg1:5432,pg2:5433/app?target_session_attrs=read-write",
    "postgres://u:p%40ss@10.0.0.1,10.0.0.2:6432/app?sslmode=require&target_session_attrs=primary",
  ]) {
    assert.equal(databaseUrl(ok), ok);
  }
});

test("a wrong scheme, an empty host entry, a bad port or an unknown target_session_attrs is refused with the reason", () => {
  assert.throws(() => databaseUrl("mysql://db/app"), /postgres/);
  assert.throws(() => databaseUrl("postgres://u@pg1:5432,,pg2/app"), /empty/);
  assert.throws(() => databaseUrl("postgres://u@pg1:5432,pg2:99999/app"), /URL/);
  assert.throws(() => databaseUrl("postgres://u@pg1,pg2/app?target_session_attrs=writable"), /target_session_attrs/);
});
