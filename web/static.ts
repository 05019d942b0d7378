/**
 * Serves the built console (web/dist) as plain HTTP: files by path, index.html
 * for "/" and for paths with no file extension, hashed assets cached for a
 * year. When dist is missing, or older than the console's sources in a
 * checkout, the first request builds it with Vite (a fresh clone needs no
 * separate build step, and an edited console is not served stale);
 * production images ship it prebuilt, without the sources.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { HttpRoute, Logger, RouteDeclaration } from "../platform/index.js";

/** The folder of the web console's sources (vite.config.ts, index.html). */
export const webRoot = dirname(fileURLToPath(import.meta.url));
/** Where `npm run web:build` writes the console. */
export const webDist = join(webRoot, "dist");

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

/** Headers that keep the console from being framed or fed foreign scripts. */
const securityHeaders = {
  "content-security-policy": "default-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/**
 * Builds the console into `outDir` with Vite (a devDependency). Builds into a
 * temporary folder and renames it, so concurrent builders never serve half a
 * build. Throws with a clear message when Vite is not installed.
 */
export async function buildWebConsole(outDir = webDist): Promise<void> {
  let vite: typeof import("vite");
  try {
    vite = await import("vite");
  } catch {
    throw new Error(`${outDir} is missing and Vite is not installed: run \`npm run web:build\` where devDependencies are installed`);
  }
  const tmp = `${outDir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(dirname(outDir), { recursive: true });
  try {
    await vite.build({ configFile: join(webRoot, "vite.config.ts"), logLevel: "warn", build: { outDir: tmp, emptyOutDir: true } });
    const old = `${outDir}.old-${process.pid}-${Date.now()}`;
    if (existsSync(outDir)) renameSync(outDir, old);
    try {
      renameSync(tmp, outDir);
    } catch (err) {
      if (!existsSync(join(outDir, "index.html"))) throw err; // someone else won the race otherwise
    }
    rmSync(old, { recursive: true, force: true });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Newest modification time (ms) of the files under `paths` (0 when none exist). */
function newestMtime(paths: readonly string[]): number {
  let newest = 0;
  const visit = (p: string) => {
    const info = statSync(p, { throwIfNoEntry: false });
    if (!info) return;
    if (info.isDirectory()) for (const name of readdirSync(p)) visit(join(p, name));
    else newest = Math.max(newest, info.mtimeMs);
  };
  paths.forEach(visit);
  return newest;
}

/**
 * Whether the default build is missing or older than the sources it is built
 * from (the console, its config and the generated stubs). Without sources (a
 * production image) a present build is never stale.
 */
export function needsBuild(dir: string): boolean {
  const built = statSync(join(dir, "index.html"), { throwIfNoEntry: false });
  if (!built) return true;
  if (resolve(dir) !== resolve(webDist) || !existsSync(join(webRoot, "src"))) return false;
  const sources = [join(webRoot, "index.html"), join(webRoot, "src"), join(webRoot, "vite.config.ts"), join(webRoot, "..", "gen")];
  return newestMtime(sources) > built.mtimeMs;
}

/** Options of the static route. */
export interface StaticRouteOptions {
  /** The folder to serve (default web/dist). */
  readonly dir?: string;
  /** Build the folder with Vite on the first request when it is missing or stale (default true). */
  readonly buildWhenMissing?: boolean;
  readonly log?: Logger;
}

/** The console as the web module declares it: every path no other route takes, public. */
export const consoleRoute: RouteDeclaration = { path: "/*", methods: ["GET"], access: "public" };

/** The HttpRoute serving the console at "/" and below (GET and HEAD). */
export function createStaticRoute(options: StaticRouteOptions = {}): HttpRoute {
  const dir = resolve(options.dir ?? webDist);
  let ready: Promise<void> | undefined;
  const ensureBuilt = () =>
    (ready ??= (async () => {
      if (options.buildWhenMissing === false) {
        if (!existsSync(join(dir, "index.html"))) throw Object.assign(new Error(`the web console is not built (${dir})`), { status: 503 });
        return;
      }
      if (!needsBuild(dir)) return;
      options.log?.info({ dir }, "building the web console (first request; it was missing or older than its sources)");
      await buildWebConsole(dir);
    })().catch((err: unknown) => {
      ready = undefined; // let a later request try again
      throw err;
    }));

  return {
    method: "GET",
    path: consoleRoute.path,
    async handle(req: IncomingMessage, res: ServerResponse) {
      await ensureBuilt();
      let path: string;
      try {
        path = decodeURIComponent((req.url ?? "/").split("?", 1)[0]!);
      } catch {
        throw Object.assign(new Error("malformed path"), { status: 400 });
      }
      const file = normalize(join(dir, path));
      if (file !== dir && !file.startsWith(dir + sep)) throw Object.assign(new Error("not found"), { status: 404 });
      const info = await stat(file).catch(() => undefined);
      let target = file;
      if (!info?.isFile()) {
        // Asset-looking paths that do not exist are 404s; the rest is the app.
        if (extname(path) !== "") throw Object.assign(new Error(`no file ${path}`), { status: 404 });
        target = join(dir, "index.html");
      }
      const body = await readFile(target);
      const immutable = target.startsWith(join(dir, "assets") + sep);
      res.writeHead(200, {
        "content-type": contentTypes[extname(target)] ?? "application/octet-stream",
        "content-length": body.length,
        "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
        ...securityHeaders,
      });
      res.end(body);
    },
  };
}
