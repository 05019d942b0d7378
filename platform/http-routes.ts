/**
 * Plain HTTP routes served beside the RPCs on the same port: health probes,
 * metrics, and whatever a service adds (JWKS, webhooks, the web console).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

/** One plain HTTP route. `path` ending in "/*" matches every path below it. */
export interface HttpRoute {
  readonly method: "GET" | "POST" | "HEAD" | "*";
  readonly path: string;
  handle(req: IncomingMessage, res: ServerResponse): void | Promise<void>;
}

/** A WebSocket (or other) upgrade served at `path`. */
export interface UpgradeRoute {
  readonly path: string;
  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

/** Finds the route for a request, exact paths before prefixes, longest prefix first. */
export function createRouteTable(routes: readonly HttpRoute[]) {
  const exact = new Map<string, HttpRoute[]>();
  const prefixes: HttpRoute[] = [];
  for (const r of routes) {
    if (r.path.endsWith("/*")) prefixes.push(r);
    else exact.set(r.path, [...(exact.get(r.path) ?? []), r]);
  }
  prefixes.sort((a, b) => b.path.length - a.path.length);
  const methodOk = (r: HttpRoute, m: string) => r.method === "*" || r.method === m || (m === "HEAD" && r.method === "GET");
  return (method: string, path: string): HttpRoute | "method-not-allowed" | undefined => {
    const candidates = exact.get(path) ?? prefixes.filter((r) => path.startsWith(r.path.slice(0, -1)));
    if (candidates.length === 0) return undefined;
    return candidates.find((r) => methodOk(r, method)) ?? "method-not-allowed";
  };
}

/** Sends a small JSON body with a status. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data), ...headers });
  res.end(data);
}

/** Reads a request body up to `maxBytes`; rejects with status 413 beyond. */
export async function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw Object.assign(new Error(`body over ${maxBytes} bytes`), { status: 413 });
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}
