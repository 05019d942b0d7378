/** How the standard OTEL_* variables turn into SDK options (pure parts of sdk.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../config.js";
import { readPlatformSettings } from "../settings.js";
import { defaultServiceNameOf, keyValues, samplerOf, tracesEndpoint, tracesProtocol } from "./sdk.js";

const settings = (env: Record<string, string>) => readPlatformSettings(env);

test("tracing is off without an endpoint, and when disabled or its exporter is none", () => {
  assert.equal(tracesEndpoint(settings({})), undefined);
  assert.equal(tracesEndpoint(settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318", OTEL_SDK_DISABLED: "true" })), undefined);
  assert.equal(tracesEndpoint(settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318", OTEL_TRACES_EXPORTER: "none" })), undefined);
});

test("the base endpoint gets /v1/traces; the traces endpoint is used as given and wins", () => {
  assert.equal(tracesEndpoint(settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318" })), "http://jaeger:4318/v1/traces");
  assert.equal(tracesEndpoint(settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/otlp/" })), "http://c:4318/otlp/v1/traces");
  assert.equal(
    tracesEndpoint(settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://t.example/x" })),
    "https://t.example/x",
  );
});

test("spans are sent as protobuf unless JSON is asked for; the traces-specific protocol wins", () => {
  assert.equal(tracesProtocol(settings({})), "http/protobuf");
  assert.equal(tracesProtocol(settings({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })), "http/json");
  assert.equal(tracesProtocol(settings({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf" })), "http/protobuf");
  assert.throws(() => settings({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }), /OTEL_EXPORTER_OTLP_PROTOCOL: expected one of http\/protobuf, http\/json/);
});

test("OTEL_TRACES_SAMPLER and its argument choose the sampler", async () => {
  const describe = async (env: Record<string, string>) => String(await samplerOf(settings(env)));
  assert.match(await describe({}), /^ParentBased\{root=AlwaysOnSampler/);
  assert.equal(await describe({ OTEL_TRACES_SAMPLER: "always_off" }), "AlwaysOffSampler");
  assert.equal(await describe({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" }), "TraceIdRatioBased{0.25}");
  assert.match(await describe({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.1" }), /^ParentBased\{root=TraceIdRatioBased\{0.1\}/);
});

test("a bad OTEL_* value stops the process with a message naming the variable", () => {
  assert.throws(() => settings({ OTEL_TRACES_SAMPLER: "sometimes" }), (e: unknown) => e instanceof ConfigError && /OTEL_TRACES_SAMPLER: expected one of/.test(e.message));
  assert.throws(() => settings({ OTEL_TRACES_SAMPLER_ARG: "2" }), /OTEL_TRACES_SAMPLER_ARG: expected a probability from 0 to 1/);
  assert.throws(() => settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "jaeger:4318" }), /OTEL_EXPORTER_OTLP_ENDPOINT/);
});

test("key=value lists (headers, resource attributes) are parsed and percent-decoded", () => {
  assert.deepEqual(keyValues("a=1, b = two%20words ,bad,=x,c=x=y"), { a: "1", b: "two words", c: "x=y" });
  assert.deepEqual(keyValues(""), {});
});

test("a process running one service is named after it", () => {
  assert.equal(defaultServiceNameOf(["gateway"]), "switchyard-gateway");
  assert.equal(defaultServiceNameOf(["auth", "gateway"]), "switchyard");
});
