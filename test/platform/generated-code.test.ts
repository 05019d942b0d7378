/**
 * gen/ is produced by `buf generate` only: regenerate into a scratch folder
 * and compare file by file, so a hand edit or a forgotten `npm run generate`
 * after a proto change fails the build.
 */
import { it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";

function listFiles(dir: string, root = dir, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) listFiles(p, root, out);
    else out.push(relative(root, p));
  }
  return out.sort();
}

it("gen/ matches what buf generate makes from the protos", async () => {
  const scratch = mkdtempSync(join(tmpdir(), "sy-gen-"));
  try {
    await promisify(execFile)("node_modules/.bin/buf", ["generate", "--output", scratch]);
    const fresh = join(scratch, "gen");
    const expected = listFiles(fresh);
    const actual = listFiles("gen");
    assert.deepEqual(actual, expected, "gen/ has missing or extra files: run `npm run generate`");
    for (const f of expected) {
      assert.ok(readFileSync(join("gen", f)).equals(readFileSync(join(fresh, f))), `gen/${f} differs from the protos: run \`npm run generate\``);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
