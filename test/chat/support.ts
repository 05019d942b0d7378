/**
 * What the chat tests share: gateways and chat instances as separate
 * processes (SERVICES=gateway / SERVICES=chat) on a real PostgreSQL and
 * nats-server, chat reaching the gateway through DeviceService with a
 * service token, clients with a user token, and helpers to read a turn.
 */
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { randomBytes } from "node:crypto";
import { AgentService } from "../../gen/switchyard/chat/v1/agent_pb.js";
import { ChatService, type ChatResponse } from "../../gen/switchyard/chat/v1/chat_pb.js";
import { spawnPlatform, type PlatformProcess } from "../support/spawn.js";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { DeviceFrameSchema } from "../../gen/switchyard/device/v1/device_frame_pb.js";
import { connectDevice, type GatewayProcess, type TestDevice, type TestKeys, type ToolHandler } from "../gateway/support.js";

/** A chat process. */
export interface ChatProcess extends PlatformProcess {
  readonly instanceId: string;
}

/** Starts `SERVICES=chat` against `gatewayUrl`, with `env` (LLM_*, DATABASE_URL, NATS_URL, AUTH_JWKS_URL…). */
export async function startChat(keys: TestKeys, gatewayUrl: string, env: Record<string, string>): Promise<ChatProcess> {
  const instanceId = env.INSTANCE_ID ?? `chat-${randomBytes(4).toString("hex")}`;
  const serviceToken = await keys.mint("service:chat", { roles: ["service"], ttlS: 3600 });
  const p = await spawnPlatform({
    timeoutMs: 90_000,
    env: {
      SERVICES: "chat",
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      INSTANCE_ID: instanceId,
      SHUTDOWN_GRACE_MS: "1000",
      AUTH_JWKS_URL: keys.jwksUrl,
      AUTH_SERVICE_TOKEN: serviceToken,
      GATEWAY_URL: gatewayUrl,
      // No plugins service in these tests: its listing fails (UNIMPLEMENTED there) and turns use the device tools alone.
      PLUGINS_URL: gatewayUrl,
      RATE_LIMIT_ENABLED: "false",
      ...env,
    },
  });
  process.once("exit", () => p.child.kill("SIGKILL"));
  return { ...p, instanceId };
}

/** ChatService and AgentService clients sending `token`. */
export function chatClients(baseUrl: string, token: string): { chat: Client<typeof ChatService>; agents: Client<typeof AgentService> } {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl, interceptors: [auth] });
  return { chat: createClient(ChatService, transport), agents: createClient(AgentService, transport) };
}

/** A stream read to its end: its events and how it ended. */
export interface ReadStream {
  readonly events: ChatResponse[];
  readonly error: ConnectError | undefined;
}

/** Reads `stream` to the end, never throwing; `onEvent` sees each event as it comes. */
export async function readAll(stream: AsyncIterable<ChatResponse>, onEvent?: (e: ChatResponse) => void | Promise<void>): Promise<ReadStream> {
  const events: ChatResponse[] = [];
  try {
    for await (const e of stream) {
      events.push(e);
      await onEvent?.(e);
    }
    return { events, error: undefined };
  } catch (err) {
    return { events, error: ConnectError.from(err) };
  }
}

/** The text a stream's deltas spell, honouring `restarted`: text since the last tool call event is dropped. */
export function textOf(events: readonly ChatResponse[]): string {
  let committed = "";
  let current = "";
  for (const e of events) {
    if (e.event.case === "textDelta") current += e.event.value.text;
    if (e.event.case === "toolCallStarted" || e.event.case === "toolCallFinished") committed = current;
    if (e.event.case === "restarted") current = committed;
  }
  return current;
}

/** The event kinds in order, for assertions; text deltas in a row count once (the server may merge them). */
export const kinds = (events: readonly ChatResponse[]) =>
  events.map((e) => e.event.case).filter((k, i, all) => !(k === "textDelta" && all[i - 1] === "textDelta"));

/** Expects `p` to fail; returns its code and message. */
export async function failure(p: Promise<unknown> | AsyncIterable<unknown>): Promise<{ code: Code; message: string }> {
  try {
    if (Symbol.asyncIterator in (p as object)) for await (const _ of p as AsyncIterable<unknown>);
    else await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/** A device tool as a test declares it in its hello. */
export interface DeviceToolSpec {
  readonly name: string;
  readonly description?: string;
  readonly schema?: Record<string, unknown>;
  readonly destructive?: boolean;
}

/** Connects a `ws` device (test/gateway/support.ts) that declares full tools: descriptions, schemas, annotations. */
export async function connectToolDevice(port: number, token: string, tools: DeviceToolSpec[], onCall?: ToolHandler): Promise<TestDevice> {
  const device = await connectDevice(port, { token, noHello: true, onCall });
  device.send(
    create(DeviceFrameSchema, {
      frame: {
        case: "hello",
        value: {
          deviceId: `d${randomBytes(4).toString("hex")}`,
          deviceName: "test device",
          tools: tools.map((t) => ({
            name: t.name,
            description: t.description ?? "",
            parametersSchema: t.schema as JsonObject | undefined,
            annotations: t.destructive ? { destructiveHint: true } : undefined,
          })),
        },
      },
    }),
  );
  await device.waitFor((f) => f.frame.case === "welcome", 10_000, "welcome");
  return device;
}

/** The events of a ResumeTurn or StreamRun stream. */
export async function* unwrap(stream: AsyncIterable<{ event?: ChatResponse }>): AsyncGenerator<ChatResponse> {
  for await (const r of stream) yield r.event!;
}

/** Starts `SERVICES=gateway` (as test/gateway/support.ts does), allowing a slow start on a loaded machine. */
export async function startGatewayProcess(env: Record<string, string>): Promise<GatewayProcess> {
  const instanceId = `gw-${randomBytes(4).toString("hex")}`;
  const gw = await spawnPlatform({
    timeoutMs: 90_000,
    env: { SERVICES: "gateway", HOST: "127.0.0.1", LOG_LEVEL: "warn", INSTANCE_ID: instanceId, SHUTDOWN_GRACE_MS: "1000", ...env },
  });
  process.once("exit", () => gw.child.kill("SIGKILL"));
  return { port: gw.port, instanceId, baseUrl: gw.baseUrl, child: gw.child, output: gw.output, kill: gw.stop };
}
