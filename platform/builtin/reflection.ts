/**
 * gRPC server reflection, v1 and v1alpha, over the descriptors the generated
 * code embeds, so `buf curl` and grpcurl can list and call every RPC with no
 * local protos. One implementation serves both versions: their messages have
 * the same shape under different packages.
 */
import { createRegistry, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { HandlerContext } from "@connectrpc/connect";
import type { ServerReflectionRequest } from "../../gen/grpc/reflection/v1/reflection_pb.js";

type ReflectionResponse = {
  validHost: string;
  originalRequest: ServerReflectionRequest;
  messageResponse:
    | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
    | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
    | { case: "listServicesResponse"; value: { service: { name: string }[] } }
    | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };
};

const NOT_FOUND = 5;
const INVALID_ARGUMENT = 3;

/**
 * Creates the ServerReflectionInfo implementation answering for `services`
 * (the reflection services themselves included by the caller).
 */
export function createReflection(services: readonly DescService[]) {
  const files = new Map<string, DescFile>();
  const collect = (f: DescFile) => {
    if (files.has(f.proto.name)) return;
    files.set(f.proto.name, f);
    f.dependencies.forEach(collect);
  };
  services.forEach((s) => collect(s.file));
  const registry = createRegistry(...files.values());
  const names = services.map((s) => s.typeName).sort();
  const encoded = new Map<DescFile, Uint8Array>();
  const bytesOf = (f: DescFile) => {
    let b = encoded.get(f);
    if (b === undefined) encoded.set(f, (b = toBinary(FileDescriptorProtoSchema, f.proto)));
    return b;
  };

  /** A file and everything it imports, each once, dependencies last. */
  const withDeps = (file: DescFile): Uint8Array[] => {
    const seen = new Set<DescFile>();
    const visit = (f: DescFile) => {
      if (seen.has(f)) return;
      seen.add(f);
      f.dependencies.forEach(visit);
    };
    visit(file);
    return [...seen].map(bytesOf);
  };

  const answer = (req: ServerReflectionRequest): ReflectionResponse["messageResponse"] => {
    const notFound = (what: string) => ({
      case: "errorResponse" as const,
      value: { errorCode: NOT_FOUND, errorMessage: `${what} is not known to this server` },
    });
    const m = req.messageRequest;
    switch (m.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: names.map((name) => ({ name })) } };
      case "fileByFilename": {
        const file = files.get(m.value);
        return file ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDeps(file) } } : notFound(`file "${m.value}"`);
      }
      case "fileContainingSymbol": {
        const symbol = m.value.replace(/^\./, "");
        const desc = registry.get(symbol) ?? registry.get(symbol.replace(/\.[^.]+$/, "")); // a method's service
        const file = desc && "file" in desc ? desc.file : undefined;
        return file ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDeps(file) } } : notFound(`symbol "${m.value}"`);
      }
      case "fileContainingExtension": {
        const base = registry.getMessage(m.value.containingType);
        const ext = base && registry.getExtensionFor(base, m.value.extensionNumber);
        return ext ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDeps(ext.file) } } : notFound(`extension ${m.value.extensionNumber} of "${m.value.containingType}"`);
      }
      case "allExtensionNumbersOfType": {
        const msg = registry.getMessage(m.value);
        if (!msg) return notFound(`message "${m.value}"`);
        const numbers: number[] = [];
        for (const t of registry) if (t.kind === "extension" && t.extendee.typeName === msg.typeName) numbers.push(t.number);
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: msg.typeName, extensionNumber: numbers } };
      }
      default:
        return { case: "errorResponse", value: { errorCode: INVALID_ARGUMENT, errorMessage: "the request names no question" } };
    }
  };

  return async function* serverReflectionInfo(
    requests: AsyncIterable<ServerReflectionRequest>,
    _ctx: HandlerContext,
  ): AsyncIterable<ReflectionResponse> {
    for await (const req of requests) {
      yield { validHost: req.host, originalRequest: req, messageResponse: answer(req) };
    }
  };
}
