/** The README's configuration reference is generated from the declarations: it must match them. */
import { it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { readmeWithEnvReference } from "../../scripts/env-doc.js";

it("README.md's configuration tables match the variables the code declares", () => {
  const readme = readFileSync("README.md", "utf8");
  assert.ok(readme === readmeWithEnvReference(readme), "README.md is stale: run `npm run docs`");
});
