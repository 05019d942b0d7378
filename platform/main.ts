/**
 * `npm start`: every service (or those named in SERVICES) in one process on
 * one port. A bad environment variable stops the process at once with a
 * message that names it.
 */
import { serviceModules } from "../services/index.js";
import { ConfigError } from "./config.js";
import { exitOnSignals, startProcess } from "./process.js";
import { readPlatformSettings } from "./settings.js";

try {
  const settings = readPlatformSettings();
  const wanted = settings.SERVICES.length === 0 ? serviceModules : serviceModules.filter((m) => settings.SERVICES.includes(m.name as never));
  const proc = await startProcess(wanted, settings);
  exitOnSignals(proc);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`switchyard: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`switchyard: failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
}
