/**
 * Runs a set of service modules as one process on one port: reads the
 * configuration, starts the modules, serves them, and shuts down gracefully on
 * SIGTERM/SIGINT (exit 0 once done, within the grace period plus a margin).
 */
import { createCors } from "./cors.js";
import { assertDeclared } from "./declarations.js";
import { createServiceUrls } from "./service-urls.js";
import { createProcessAuth } from "./auth/process-auth.js";
import { createTokenCheck } from "./auth/token-check.js";
import { startDependencies } from "./dependencies.js";
import { createLogger, type Logger } from "./log.js";
import { createMetrics } from "./metrics.js";
import { createPlatformServer, type PlatformServer } from "./server.js";
import type { ServiceModule, ServiceParts } from "./service.js";
import type { PlatformSettings } from "./settings.js";
import { defaultServiceNameOf, startTracing } from "./telemetry/sdk.js";

/** A running process: its server, port and a way to stop it. */
export interface RunningProcess {
  readonly server: PlatformServer;
  readonly port: number;
  readonly log: Logger;
  /** Graceful stop: the server first, then every module's background work. */
  stop(): Promise<void>;
}

/** Starts `modules` with `settings`; the caller decides about signals. */
export async function startProcess(modules: readonly ServiceModule[], settings: PlatformSettings, log = createLogger(settings.LOG_LEVEL)): Promise<RunningProcess> {
  const tracing = await startTracing(settings, defaultServiceNameOf(modules.map((m) => m.name)), log);
  const metrics = createMetrics();
  const shutdown = new AbortController();
  const auth = createProcessAuth(settings);
  const deps = await startDependencies(modules, settings, log).catch(async (err: unknown) => {
    await tracing?.shutdown();
    throw err;
  });
  const parts: ServiceParts[] = [];
  let tokenCheck;
  try {
    for (const m of modules) {
      const serviceUrl = createServiceUrls(m, modules, settings.PORT, process.env);
      const ctx = { instanceId: settings.INSTANCE_ID, port: settings.PORT, serviceUrl, log: log.child({ service: m.name }), metrics, shutdownSignal: shutdown.signal, auth };
      const started = await m.start(deps.provide(ctx, m));
      parts.push(started);
      assertDeclared(m, started);
    }
    // Every process checks tokens; a process serving non-public RPCs without keys stops here.
    tokenCheck = createTokenCheck(parts.flatMap((p) => p.services.map((s) => s.service)), auth.verifier());
  } catch (err) {
    // A failed start stops what did start, so an in-process caller (a test) is left with no pool or connection open.
    shutdown.abort();
    await stopModules(modules, parts, log);
    await deps.close();
    await tracing?.shutdown();
    throw err;
  }
  const services = parts.flatMap((p) => p.services);
  const server = createPlatformServer({
    services,
    routes: parts.flatMap((p) => p.routes ?? []),
    upgrades: parts.flatMap((p) => p.upgrades ?? []),
    middleware: [deps.errors, tokenCheck, ...parts.flatMap((p) => p.middleware ?? []), ...deps.limits],
    readiness: Object.assign({}, deps.readiness, ...parts.map((p) => p.readiness ?? {})),
    cors: createCors(settings.ALLOWED_ORIGINS),
    readMaxBytes: settings.READ_MAX_BYTES,
    writeMaxBytes: settings.WRITE_MAX_BYTES,
    log,
    metrics,
  });
  let port: number;
  try {
    port = await server.listen(settings.PORT, settings.HOST);
  } catch (err) {
    // Nothing serves, so nothing may stay open: stop the modules, the pool, NATS and their timers.
    shutdown.abort();
    await server.shutdown(0);
    await stopModules(modules, parts, log);
    await deps.close();
    await tracing?.shutdown();
    throw listenError(err, settings.HOST, settings.PORT);
  }
  log.info({ port, instance: settings.INSTANCE_ID, services: modules.map((m) => m.name), tracesTo: tracing?.endpoint }, "serving");
  let stopping: Promise<void> | undefined;
  return {
    server,
    port,
    log,
    stop: () =>
      (stopping ??= (async () => {
        shutdown.abort();
        await server.shutdown(settings.SHUTDOWN_GRACE_MS);
        await stopModules(modules, parts, log);
        await deps.close();
        await tracing?.shutdown(); // the last spans are exported before exit
      })()),
  };
}

/** A failed listen as a person can act on it: which address, and what to do. */
function listenError(err: unknown, host: string, port: number): Error {
  const code = (err as NodeJS.ErrnoException).code;
  const where = `${host}:${port}`;
  if (code === "EADDRINUSE") return new Error(`port ${port} is already in use (${where}): stop the process listening there or set PORT to a free port`, { cause: err });
  if (code === "EACCES") return new Error(`no permission to listen on port ${port} (${where}): use a port above 1023 or run with the needed privilege`, { cause: err });
  return new Error(`cannot listen on port ${port} (${where}): ${(err as Error).message}`, { cause: err });
}

/** Stops `proc` on SIGTERM or SIGINT and exits 0 (1 if stopping failed). */
export function exitOnSignals(proc: RunningProcess): void {
  const onSignal = (signal: NodeJS.Signals) => {
    proc.log.info({ signal }, "shutting down");
    const hardStop = setTimeout(() => {
      proc.log.error("shutdown took too long; exiting");
      process.exit(1);
    }, 29_000);
    hardStop.unref();
    proc.stop().then(
      () => {
        proc.log.info("stopped");
        proc.log.flush(() => process.exit(0)); // the last log lines reach stdout first
      },
      (err: unknown) => {
        proc.log.error({ err: String(err) }, "shutdown failed");
        proc.log.flush(() => process.exit(1));
      },
    );
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
}

/** Longest one module's background work may take to stop. */
const MODULE_STOP_MS = 10_000;

/**
 * Stops the started modules' background work, last started first, each within
 * a bound: one stuck on a host that is gone must not keep the process from
 * stopping (it is named in the log, and the process exits anyway).
 */
async function stopModules(modules: readonly ServiceModule[], parts: readonly ServiceParts[], log: Logger): Promise<void> {
  for (let i = parts.length - 1; i >= 0; i--) {
    const stop = parts[i]!.stop;
    if (stop === undefined) continue;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), MODULE_STOP_MS)));
    const result = await Promise.race([stop.call(parts[i]).catch((err: unknown) => log.warn({ err: String(err), service: modules[i]?.name }, "stopping a module failed")), late]);
    clearTimeout(timer);
    if (result === "late") log.warn({ service: modules[i]?.name, ms: MODULE_STOP_MS }, "a module did not stop in time; stopping without it");
  }
}
