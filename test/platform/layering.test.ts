/**
 * The floor knows no service: nothing under platform/ imports from the
 * services, the gateway, the console or the composition root, and no
 * platform source names a module of the catalogue. (Reading import
 * specifiers is the one thing here done on source text: it is a lint, not a
 * source of facts.)
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { test } from "node:test";
import { serviceModules } from "../../app/catalogue.js";

const root = resolve(import.meta.dirname, "../..");

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (name.endsWith(".ts") && !name.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

const platformFiles = sources(join(root, "platform"));

test("no file under platform/ imports from app/, services/, gateway/ or web/", () => {
  const offending: string[] = [];
  for (const file of platformFiles) {
    for (const m of readFileSync(file, "utf8").matchAll(/(?:from|import)\s*\(?\s*"(\.[^"]+)"/g)) {
      const target = relative(root, resolve(file, "..", m[1]!));
      if (/^(app|services|gateway|web)\//.test(target)) offending.push(`${relative(root, file)} imports ${m[1]}`);
    }
  }
  assert.deepEqual(offending, []);
});

test("no platform source names a service module", () => {
  // Module names that are also ordinary words of the floor ("auth" is its token check, "web" is gRPC-Web, "storage" is AsyncLocalStorage) are matched as quoted names only.
  const offending: string[] = [];
  for (const file of platformFiles) {
    const text = readFileSync(file, "utf8");
    for (const m of serviceModules) {
      const pattern = ["auth", "web", "storage"].includes(m.name) ? new RegExp(`["'\`]${m.name}["'\`]`) : new RegExp(`\\b${m.name}\\b`, "i");
      if (pattern.test(text)) offending.push(`${relative(root, file)} names "${m.name}"`);
    }
    for (const s of serviceModules.flatMap((m) => m.serves)) if (text.includes(s.name)) offending.push(`${relative(root, file)} names ${s.name}`);
  }
  assert.deepEqual(offending, []);
});
