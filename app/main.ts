/**
 * `npm start`: every service of the catalogue (or those named in SERVICES) in
 * one process on one port. A bad environment variable stops the process at
 * once (exit 2) with a message that names it.
 */
import { ConfigError, exitOnSignals, readPlatformSettings, startProcess } from "../platform/index.js";
import { selectModules } from "./catalogue.js";

try {
  const settings = readPlatformSettings();
  const proc = await startProcess(selectModules(settings.SERVICES), settings);
  exitOnSignals(proc);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`switchyard: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`switchyard: failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
}
