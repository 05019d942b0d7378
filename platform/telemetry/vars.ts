/**
 * The standard OpenTelemetry variables this platform reads, part of the
 * platform settings (see ../settings.ts). Names and meanings are the
 * specification's (opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables);
 * tracing is on only when an OTLP endpoint is set.
 */
import { bool, env, int, oneOf, str, url, type EnvParser } from "../config.js";

/** A sampler argument: a probability from 0 to 1. */
const ratio: EnvParser<number> = (raw) => {
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || n < 0 || n > 1) throw new Error(`expected a probability from 0 to 1, got "${raw}"`);
  return n;
};

/** Spread into `platformVars`. */
export const tracingVars = {
  OTEL_EXPORTER_OTLP_ENDPOINT: env(
    "OTLP/HTTP collector base URL (e.g. http://jaeger:4318); spans go to <url>/v1/traces. Unset (and no OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): tracing is off",
    url("http", "https"),
    "",
  ),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: env("full OTLP/HTTP URL for spans (overrides OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://jaeger:4318/v1/traces", url("http", "https"), ""),
  OTEL_EXPORTER_OTLP_PROTOCOL: env(
    "how spans are encoded: http/protobuf (the specification's default; a third of the CPU of JSON) or http/json",
    oneOf("http/protobuf", "http/json"),
    "http/protobuf",
  ),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: env("the encoding of spans, overriding OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf or http/json; empty: that one", oneOf("", "http/protobuf", "http/json"), ""),
  OTEL_EXPORTER_OTLP_HEADERS: env("headers sent with every export, key=value,key2=value2 (collector credentials)", str, "", true),
  OTEL_SERVICE_NAME: env("service.name of this process's spans; empty: switchyard-<the one service in SERVICES>, else switchyard", str, ""),
  OTEL_RESOURCE_ATTRIBUTES: env("more resource attributes of the spans, key=value,key2=value2 (e.g. deployment.environment=prod)", str, ""),
  OTEL_TRACES_SAMPLER: env(
    "which traces are recorded",
    oneOf("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"),
    "parentbased_always_on",
  ),
  OTEL_TRACES_SAMPLER_ARG: env("the sampling probability of the traceidratio samplers, 0 to 1", ratio, 1),
  OTEL_TRACES_EXPORTER: env("otlp, or none to record no spans even with an endpoint set", oneOf("otlp", "none"), "otlp"),
  OTEL_SDK_DISABLED: env("true turns tracing off whatever else is set", bool, false),
  OTEL_BSP_SCHEDULE_DELAY: env("ms between two exports of finished spans", int(1, 600_000), 5000),
  OTEL_BSP_MAX_QUEUE_SIZE: env("finished spans held for export; beyond, new ones are dropped (counted, never blocking a call)", int(1, 1_000_000), 2048),
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE: env("spans per export request (at most OTEL_BSP_MAX_QUEUE_SIZE)", int(1, 1_000_000), 512),
  OTEL_BSP_EXPORT_TIMEOUT: env("ms an export may take before it is abandoned", int(1, 600_000), 30_000),
};
