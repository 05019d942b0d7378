/**
 * Installs the OpenTelemetry SDK in this process when an OTLP endpoint is
 * configured: the trace SDK (`@opentelemetry/sdk-trace`) with a batch span
 * processor and the OTLP/HTTP exporter (protobuf unless JSON is asked for),
 * AsyncLocalStorage context, and W3C trace-context propagation. Without an
 * endpoint nothing is installed and tracing.ts stays off (one undefined
 * check per call).
 *
 * The trace SDK 3.x reads no environment itself, so the standard `OTEL_*`
 * variables are declared in vars.ts (checked at start like every other
 * variable) and turned into SDK options here. The SDK modules are loaded only
 * when tracing is on: loading them costs a process start hundreds of ms.
 */
import type { Sampler, SpanExporter } from "@opentelemetry/sdk-trace";
import type { Logger } from "../log.js";
import type { ConfigOf } from "../config.js";
import { setPlatformTracer } from "./tracing.js";
import type { tracingVars } from "./vars.js";

/** The tracing settings (a subset of the platform settings). */
export type TracingSettings = ConfigOf<typeof tracingVars>;

/** The installed SDK. */
export interface Tracing {
  /** The URL spans are exported to (without any credentials it held). */
  readonly endpoint: string;
  /** Exports every finished span now. */
  flush(): Promise<void>;
  /** Exports what is left and uninstalls; tracing is off afterwards. */
  shutdown(): Promise<void>;
}

/** How spans are encoded on the wire: the traces-specific setting, else the general one. */
export function tracesProtocol(s: Pick<TracingSettings, "OTEL_EXPORTER_OTLP_PROTOCOL" | "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL">): "http/protobuf" | "http/json" {
  return s.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || s.OTEL_EXPORTER_OTLP_PROTOCOL;
}

/** Where spans go, or undefined when tracing is off. */
export function tracesEndpoint(s: TracingSettings): string | undefined {
  if (s.OTEL_SDK_DISABLED || s.OTEL_TRACES_EXPORTER === "none") return undefined;
  if (s.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== "") return s.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  if (s.OTEL_EXPORTER_OTLP_ENDPOINT === "") return undefined;
  return `${s.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, "")}/v1/traces`;
}

/** The sampler OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG name. */
export async function samplerOf(s: Pick<TracingSettings, "OTEL_TRACES_SAMPLER" | "OTEL_TRACES_SAMPLER_ARG">): Promise<Sampler> {
  const { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, TraceIdRatioBasedSampler } = await import("@opentelemetry/sdk-trace");
  const ratio = s.OTEL_TRACES_SAMPLER_ARG;
  switch (s.OTEL_TRACES_SAMPLER) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(ratio);
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
  }
}

/** Parses `key=value,key2=value2` (values percent-decoded, as the specification says). */
export function keyValues(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of raw.split(",")) {
    const i = part.indexOf("=");
    if (i <= 0) continue;
    const key = part.slice(0, i).trim();
    let value = part.slice(i + 1).trim();
    try {
      value = decodeURIComponent(value);
    } catch {
      /* kept as written */
    }
    if (key !== "") out[key] = value;
  }
  return out;
}

/**
 * Installs the SDK when `settings` name an endpoint; undefined otherwise.
 * `defaultServiceName` is used when OTEL_SERVICE_NAME is empty. One
 * installation serves the whole process: a call while one is installed
 * returns undefined (several platform processes started in one test process
 * share the first one's).
 */
export async function startTracing(settings: TracingSettings, defaultServiceName: string, log?: Logger): Promise<Tracing | undefined> {
  const endpoint = tracesEndpoint(settings);
  if (endpoint === undefined || installed) return undefined;
  installed = true;
  try {
    return await install(settings, endpoint, defaultServiceName, log);
  } catch (err) {
    installed = false;
    throw err;
  }
}

async function install(settings: TracingSettings, endpoint: string, defaultServiceName: string, log: Logger | undefined): Promise<Tracing> {
  const [{ context, diag, DiagLogLevel, propagation, trace }, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, { defaultResource, resourceFromAttributes }, { BatchSpanProcessor, TracerProvider }, { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION }] =
    await Promise.all([
      import("@opentelemetry/api"),
      import("@opentelemetry/context-async-hooks"),
      import("@opentelemetry/core"),
      import("@opentelemetry/resources"),
      import("@opentelemetry/sdk-trace"),
      import("@opentelemetry/semantic-conventions"),
    ]);
  const exporter = await createExporter(endpoint, keyValues(settings.OTEL_EXPORTER_OTLP_HEADERS), tracesProtocol(settings));
  const maxQueueSize = settings.OTEL_BSP_MAX_QUEUE_SIZE;
  const processor = new BatchSpanProcessor({
    exporter,
    maxQueueSize,
    maxExportBatchSize: Math.min(settings.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, maxQueueSize),
    scheduledDelayMillis: settings.OTEL_BSP_SCHEDULE_DELAY,
    exportTimeoutMillis: settings.OTEL_BSP_EXPORT_TIMEOUT,
  });
  const resource = defaultResource().merge(
    resourceFromAttributes({
      ...keyValues(settings.OTEL_RESOURCE_ATTRIBUTES),
      [ATTR_SERVICE_NAME]: settings.OTEL_SERVICE_NAME || defaultServiceName,
      [ATTR_SERVICE_VERSION]: process.env.npm_package_version ?? "0.1.0",
    }),
  );
  const provider = new TracerProvider({ resource, sampler: await samplerOf(settings), spanProcessors: [processor] });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  if (log !== undefined) {
    // The SDK reports failed exports (collector down, spans dropped) through diag: at most one line per export attempt.
    const warn = (message: string, ...args: unknown[]) => log.warn({ component: "tracing", problem: diagText(message, args) }, "tracing: the SDK reported a problem (spans may be lost)");
    const quiet = () => undefined;
    diag.setLogger({ error: warn, warn, info: quiet, debug: quiet, verbose: quiet }, DiagLogLevel.WARN);
  }
  setPlatformTracer(provider.getTracer("switchyard"));
  let stopping: Promise<void> | undefined;
  return {
    endpoint: withoutCredentials(endpoint),
    flush: () => provider.forceFlush(),
    shutdown: () =>
      (stopping ??= (async () => {
        setPlatformTracer(undefined);
        await provider.shutdown().catch(() => undefined);
        trace.disable();
        propagation.disable();
        diag.disable();
        context.disable();
        installed = false;
      })()),
  };
}

let installed = false;

/**
 * The OTLP/HTTP span exporter for `protocol`. Protobuf is the default (as
 * the OTLP spec says): encoding a span costs about a third of the CPU of
 * JSON and half the bytes, and encoding is paid on the serving thread.
 */
async function createExporter(url: string, headers: Record<string, string>, protocol: "http/protobuf" | "http/json"): Promise<SpanExporter> {
  const { OTLPTraceExporter } =
    protocol === "http/json" ? await import("@opentelemetry/exporter-trace-otlp-http") : await import("@opentelemetry/exporter-trace-otlp-proto");
  return new OTLPTraceExporter({ url, headers });
}

/** One line from a diag message, which is sometimes an error serialized as JSON (stack included). */
function diagText(message: string, args: unknown[]): string {
  let text = message;
  try {
    const parsed = JSON.parse(message) as { message?: unknown };
    if (typeof parsed.message === "string") text = parsed.message;
  } catch {
    /* plain text */
  }
  return [text, ...args.map(String)].join(" ").replace(/\s+/g, " ").slice(0, 300);
}

function withoutCredentials(raw: string): string {
  const u = new URL(raw);
  u.username = "";
  u.password = "";
  return u.toString();
}

/** The service.name a process gets by default: switchyard-<service> when it runs one service, else switchyard. */
export function defaultServiceNameOf(services: readonly string[]): string {
  return services.length === 1 ? `switchyard-${services[0]}` : "switchyard";
}
