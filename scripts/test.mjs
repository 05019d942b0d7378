#!/usr/bin/env node
// `npm test`: proto lint, type check, then every *.test.ts under the source
// folders with node's test runner (tsx loads TypeScript). Extra arguments are
// passed to the runner, e.g. `npm test -- --test-name-pattern=interop`; a
// path argument runs only the test files below it.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const roots = ["app", "platform", "services", "gateway", "envoy", "test", "web", "scripts"];
const args = process.argv.slice(2);
const paths = args.filter((a) => !a.startsWith("-"));
const flags = args.filter((a) => a.startsWith("-"));

function findTests(dir, out = []) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    if (name === "node_modules" || name === "dist" || name.startsWith(".")) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) findTests(p, out);
    else if (name.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

function step(name, cmd, cmdArgs) {
  process.stdout.write(`\n== ${name}\n`);
  const r = spawnSync(cmd, cmdArgs, { stdio: "inherit" });
  if (r.status !== 0) {
    process.stdout.write(`\n${name} failed\n`);
    process.exit(r.status ?? 1);
  }
}

/**
 * Files run two at a time (--test-concurrency=2, for 2-core CI machines), in
 * this order: the cross-process suites that spawn servers and take longest
 * first, unit tests beside the code last. Two long files then overlap each
 * other instead of one of them running alone at the end while the other
 * core idles.
 */
const heaviestFirst = ["test/edge/", "test/gateway/", "test/data/", "test/", "services/", "envoy/", "scripts/"];
const rank = (file) => {
  const i = heaviestFirst.findIndex((prefix) => file.startsWith(prefix));
  return i === -1 ? heaviestFirst.length : i;
};
const files = (paths.length ? paths : roots)
  .flatMap((p) => (p.endsWith(".test.ts") ? [p] : findTests(p)))
  .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
if (paths.length === 0) {
  step("buf lint", "npx", ["buf", "lint"]);
  step("type check", "npx", ["tsc", "--noEmit", "-p", "tsconfig.json"]);
}
step(`tests (${files.length} files, node ${process.version})`, process.execPath, [
  "--import",
  "tsx",
  "--test",
  "--test-concurrency=2",
  "--test-timeout=180000",
  ...flags,
  ...files,
]);
