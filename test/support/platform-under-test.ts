/**
 * Starts a platform process in this test process, serving the conformance
 * TestingService, and gives grpc-js and connect clients for it.
 */
import { create, fromBinary, toBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createLogger } from "../../platform/log.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { readPlatformSettings } from "../../platform/settings.js";
import { testingService, type TestingHooks } from "./testing-service.js";

/** Starts the TestingService on a free port with `env` overriding settings. */
export async function startTestingServer(env: Record<string, string> = {}, hooks: TestingHooks = {}): Promise<RunningProcess> {
  const settings = readPlatformSettings({ PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", SHUTDOWN_GRACE_MS: "2000", ...env });
  return startProcess([{ name: "testing", summary: "testing", serves: [TestingService], start: () => ({ services: [testingService(hooks)] }) }], settings, createLogger(process.env.TEST_LOG_LEVEL ?? "silent"));
}

/** The three connect-node clients of one server: gRPC (h2c), gRPC-Web and Connect (HTTP/1.1). */
export function connectClients(port: number): Record<"grpc" | "grpc-web" | "connect", Client<typeof TestingService>> {
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    grpc: createClient(TestingService, createGrpcTransport({ baseUrl })),
    "grpc-web": createClient(TestingService, createGrpcWebTransport({ baseUrl, httpVersion: "1.1" })),
    connect: createClient(TestingService, createConnectTransport({ baseUrl, httpVersion: "1.1" })),
  };
}

/** A generic grpc-js client whose methods are built from protobuf-es descriptors. */
export function grpcJsClient(service: DescService, port: number, options: grpc.ClientOptions = {}) {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    definition[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming",
      requestSerialize: (v: unknown) => Buffer.from(toBinary(m.input, create(m.input, v as never))),
      requestDeserialize: (b: Buffer) => fromBinary(m.input, b),
      responseSerialize: (v: unknown) => Buffer.from(toBinary(m.output, create(m.output, v as never))),
      responseDeserialize: (b: Buffer) => fromBinary(m.output, b),
    };
  }
  const Ctor = grpc.makeGenericClientConstructor(definition, service.typeName);
  return new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), options) as grpc.Client &
    Record<string, (...args: unknown[]) => unknown>;
}

/** Calls a unary method of a grpc-js generic client; resolves with the response and metadata. */
export function unary<T>(
  client: grpc.Client & Record<string, (...args: unknown[]) => unknown>,
  method: string,
  request: unknown,
  options: { metadata?: grpc.Metadata; deadline?: Date } = {},
): Promise<{ response?: T; error?: grpc.ServiceError; initial?: grpc.Metadata; trailing?: grpc.Metadata }> {
  return new Promise((resolve) => {
    let initial: grpc.Metadata | undefined;
    let trailing: grpc.Metadata | undefined;
    const call = client[method]!(request, options.metadata ?? new grpc.Metadata(), { deadline: options.deadline }, (error: grpc.ServiceError | null, response: T) =>
      setImmediate(() => resolve({ response, error: error ?? undefined, initial, trailing })),
    ) as grpc.ClientUnaryCall;
    call.on("metadata", (md) => (initial = md));
    call.on("status", (s) => (trailing = s.metadata));
  });
}

export type { DescMessage };
