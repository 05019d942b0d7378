/**
 * The catalogue: every service module `npm start` can run, in start order.
 * `SERVICES=a,b` chooses among them by name; the edge (Envoy), compose,
 * Kubernetes and the README's "What runs" table are generated from their
 * declarations.
 */
import { auth } from "../services/auth/module.js";
import { billing } from "../services/billing/module.js";
import { chat } from "../services/chat/module.js";
import { gateway } from "../gateway/module.js";
import { plugins } from "../services/plugins/module.js";
import { storage } from "../services/storage/module.js";
import { web } from "../web/module.js";
import { ConfigError, MODULE_NAME, type ServiceModule } from "../platform/index.js";

/** Every service module, in start order. */
export const serviceModules: readonly ServiceModule[] = [auth, gateway, chat, storage, billing, plugins, web];

/**
 * The modules `SERVICES=` names (all when empty), in catalogue order; throws a
 * ConfigError naming SERVICES and the known names for one that is not here.
 */
export function selectModules(names: readonly string[], catalogue: readonly ServiceModule[] = serviceModules): ServiceModule[] {
  const known = catalogue.map((m) => m.name);
  const unknown = names.filter((n) => !known.includes(n));
  if (unknown.length > 0) throw new ConfigError([`SERVICES: unknown service ${unknown.map((n) => `"${n}"`).join(", ")}; known: ${known.join(", ")}`]);
  return names.length === 0 ? [...catalogue] : catalogue.filter((m) => names.includes(m.name));
}

for (const m of serviceModules) {
  if (!MODULE_NAME.test(m.name)) throw new Error(`service module name "${m.name}" must match ${MODULE_NAME}`);
}
