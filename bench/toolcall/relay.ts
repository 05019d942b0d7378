/**
 * The baselines' middle process: a ws server the device process connects to,
 * fed either by NATS request/reply (the floor: the least any design that
 * crosses NATS and a WebSocket can cost) or by the origin design (Redis
 * pub/sub: `tool_call:{user}` in, `tool_result:{id}` out, and the user in the
 * `ws:connections` hash). Prints "port N" once listening.
 *
 *   node --import tsx bench/toolcall/relay.ts nats|redis <nats url>
 */
import { connect, type Msg } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import { WebSocketServer, type WebSocket } from "ws";

const [mode, natsUrl] = process.argv.slice(2) as ["nats" | "redis", string];
const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
let device: WebSocket | undefined;
const waiting = new Map<number, (reply: Buffer) => void>();
let next = 0;

/** Sends `payload` to the device with a 4-byte id; `onReply` gets the echoed payload. */
function toDevice(payload: Uint8Array, onReply: (reply: Buffer) => void): void {
  const id = next++ >>> 0;
  const frame = Buffer.allocUnsafe(4 + payload.length);
  frame.writeUInt32BE(id, 0);
  frame.set(payload, 4);
  waiting.set(id, onReply);
  device!.send(frame);
}

wss.on("connection", (ws) => {
  device = ws;
  ws.on("message", (data: Buffer) => {
    const id = data.readUInt32BE(0);
    const cb = waiting.get(id);
    waiting.delete(id);
    cb?.(data.subarray(4));
  });
});

if (mode === "nats") {
  const nc = await connect({ servers: natsUrl });
  nc.subscribe("bench.floor.>", { callback: (_err, msg: Msg) => toDevice(msg.data, (reply) => msg.respond(reply)) });
} else {
  // The origin's RedisDeviceManager on the instance holding the socket.
  const pub = new Redis({ host: "127.0.0.1", port: 6379 });
  const sub = new Redis({ host: "127.0.0.1", port: 6379 });
  await pub.hset("ws:connections", "bench-user", "instance-relay");
  await sub.subscribe("tool_call:bench-user");
  sub.on("messageBuffer", (_channel: Buffer, message: Buffer) => {
    const call = JSON.parse(message.toString()) as { id: string };
    toDevice(message, (reply) => void pub.publish(`tool_result:${call.id}`, reply));
  });
}
await new Promise<void>((r) => (wss.address() ? r() : wss.once("listening", () => r())));
process.stdout.write(`port ${(wss.address() as { port: number }).port}\n`);
