/**
 * Holds a started module to what it declared: the protobuf services in
 * `serves` and the routes in `routes` are what the edge, compose, Kubernetes
 * and the docs are generated from, so a module serving anything else (or less)
 * would be silently unreachable or wrongly exposed in production.
 */
import type { HttpRoute, UpgradeRoute } from "./http-routes.js";
import type { ServiceModule, ServiceParts } from "./service.js";

/** Service module names: one word that can name a `SERVICES=` entry, a schema, a container and a DNS name. */
export const MODULE_NAME = /^[a-z][a-z0-9]{0,30}$/;

/** Why `parts` (what `module.start` returned) differs from `module`'s declarations; empty when they agree. */
export function declarationProblems(module: ServiceModule, parts: ServiceParts): string[] {
  const problems: string[] = [];
  const m = `module "${module.name}"`;
  const registered = parts.services.map((r) => r.service);
  for (const s of registered) if (!module.serves.includes(s)) problems.push(`${m} registers ${s.typeName}, which it does not declare in \`serves\``);
  for (const s of module.serves) if (!registered.includes(s)) problems.push(`${m} declares ${s.typeName} in \`serves\` but does not register it`);
  const declared = module.routes ?? [];
  const plain = declared.filter((d) => !d.websocket);
  const upgrades = declared.filter((d) => d.websocket);
  for (const r of parts.routes ?? []) if (!plain.some((d) => routeMatches(d, r))) problems.push(`${m} serves ${r.method} ${r.path}, which it does not declare in \`routes\``);
  for (const d of plain) if (!(parts.routes ?? []).some((r) => r.path === d.path)) problems.push(`${m} declares the route ${d.path} but does not serve it`);
  for (const u of parts.upgrades ?? []) if (!upgrades.some((d) => d.path === u.path)) problems.push(`${m} serves an upgrade at ${u.path}, which it does not declare in \`routes\` (websocket: true)`);
  for (const d of upgrades) if (!(parts.upgrades ?? []).some((u: UpgradeRoute) => u.path === d.path)) problems.push(`${m} declares the WebSocket ${d.path} but does not serve it`);
  return problems;
}

function routeMatches(declared: NonNullable<ServiceModule["routes"]>[number], route: HttpRoute): boolean {
  if (declared.path !== route.path) return false;
  if (route.method === "*") return true;
  return route.method === "HEAD" ? declared.methods.includes("GET") : declared.methods.includes(route.method as never);
}

/** Throws an Error listing every problem of `declarationProblems`. */
export function assertDeclared(module: ServiceModule, parts: ServiceParts): void {
  const problems = declarationProblems(module, parts);
  if (problems.length > 0) throw new Error(`${problems.join("; ")}. Declarations are what the edge and deployments are generated from: make them agree.`);
}
