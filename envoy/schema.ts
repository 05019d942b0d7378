/**
 * Envoy's own v3 API schema, as a protobuf-es registry.
 *
 * `@grpc/grpc-js-xds` ships Envoy's API protos (with xds, googleapis and
 * protoc-gen-validate). We compile the v3 files (and what they import) with
 * buf into a descriptor set once, cache it under `.data/envoy-schema/`, and
 * load it into a registry in which `fromJson` resolves every `typed_config`.
 * Files that import protos the package does not ship (opencensus,
 * opentelemetry, prometheus) are left out, with everything that imports them.
 */
import { createFileRegistry, fromBinary, type FileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Bump when the way the set is built changes, so stale caches are rebuilt. */
const recipeVersion = "1";

/** Where the proto trees live inside @grpc/grpc-js-xds, by import root. */
function protoRoots(): string[] {
  const pkgJson = createRequire(join(repoRoot, "package.json")).resolve("@grpc/grpc-js-xds/package.json");
  const deps = join(dirname(pkgJson), "deps");
  return [join(deps, "envoy-api"), join(deps, "xds"), join(deps, "googleapis"), join(deps, "protoc-gen-validate")];
}

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith(".proto")) out.push(p);
  }
  return out;
}

/**
 * The vendored validate.proto predates `ignore_empty` in StringRules, which
 * Envoy's protos use; the copy we compile gets the field back.
 */
function patchValidate(source: string): string {
  if (/ignore_empty\s*=\s*26/.test(source)) return source;
  const patched = source.replace(/(message StringRules \{)/, "$1\n    optional bool ignore_empty = 26;");
  if (patched === source) throw new Error("validate.proto: StringRules not found; cannot add ignore_empty");
  return patched;
}

/** Import path -> file contents of every v3 Envoy file that can be built, and its imports. */
function selectFiles(): Map<string, string> {
  const available = new Map<string, string>();
  for (const root of protoRoots()) {
    if (!existsSync(root)) throw new Error(`Envoy API protos not found at ${root}: is @grpc/grpc-js-xds installed?`);
    for (const file of walk(root)) {
      const importPath = relative(root, file).split("\\").join("/");
      // protoc-gen-validate also ships tests and java sources; only validate/ is the API.
      if (root.endsWith("protoc-gen-validate") && !importPath.startsWith("validate/")) continue;
      let text = readFileSync(file, "utf8");
      if (importPath === "validate/validate.proto") text = patchValidate(text);
      available.set(importPath, text);
    }
  }
  const importsOf = (text: string) => [...text.matchAll(/^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;/gm)].map((m) => m[1]!);
  const buildable = new Map<string, boolean>();
  const canBuild = (path: string): boolean => {
    if (path.startsWith("google/protobuf/")) return true; // buf ships the well-known types
    const known = buildable.get(path);
    if (known !== undefined) return known;
    const text = available.get(path);
    buildable.set(path, false); // proto imports are acyclic; this only guards bad input
    const ok = text !== undefined && importsOf(text).every(canBuild);
    buildable.set(path, ok);
    return ok;
  };
  const chosen = new Map<string, string>();
  const add = (path: string) => {
    if (chosen.has(path) || path.startsWith("google/protobuf/")) return;
    const text = available.get(path)!;
    chosen.set(path, text);
    importsOf(text).forEach(add);
  };
  for (const path of available.keys()) {
    if (path.startsWith("envoy/") && /\/v3\//.test(path) && canBuild(path)) add(path);
  }
  return chosen;
}

/**
 * Returns the path of the cached descriptor set (building it when missing).
 * The cache key covers the shipped protos' contents and the build recipe.
 */
export function envoySchemaPath(cacheDir = join(repoRoot, ".data", "envoy-schema")): string {
  const files = selectFiles();
  const hash = createHash("sha256").update(recipeVersion);
  for (const [path, text] of [...files].sort(([a], [b]) => a.localeCompare(b))) hash.update(path).update("\0").update(text).update("\0");
  const key = hash.digest("hex").slice(0, 16);
  const out = join(cacheDir, `envoy-v3-${key}.binpb`);
  if (existsSync(out)) return out;

  const staging = join(cacheDir, `src-${process.pid}-${Date.now()}`);
  try {
    for (const [path, text] of files) {
      mkdirSync(dirname(join(staging, path)), { recursive: true });
      writeFileSync(join(staging, path), text);
    }
    writeFileSync(join(staging, "buf.yaml"), "version: v2\n");
    const tmp = `${out}.${process.pid}.tmp`;
    const buf = join(repoRoot, "node_modules", ".bin", "buf");
    execFileSync(buf, ["build", staging, "-o", tmp], { stdio: ["ignore", "ignore", "pipe"] });
    renameSync(tmp, out); // atomic: concurrent builders never see half a file
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return out;
}

let cached: FileRegistry | undefined;

/** Envoy's v3 API as a registry (built and cached on first use). */
export function loadEnvoyRegistry(): FileRegistry {
  if (cached) return cached;
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(envoySchemaPath()));
  cached = createFileRegistry(set);
  return cached;
}
