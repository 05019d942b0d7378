/**
 * The catalogue of service modules `npm start` can run; `SERVICES=a,b`
 * chooses among them by name.
 */
import type { ServiceModule } from "../platform/service.js";
import { auth } from "./auth/module.js";
import { billing } from "./billing/module.js";
import { chat } from "./chat/module.js";
import { gateway } from "../gateway/module.js";
import { plugins } from "./plugins/module.js";
import { storage } from "./storage/module.js";
import { web } from "../web/module.js";

/** Every service module, in start order. */
export const serviceModules: readonly ServiceModule[] = [auth, gateway, chat, storage, billing, plugins, web];
