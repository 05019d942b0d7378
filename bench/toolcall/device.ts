/**
 * The device process: echoes raw frames from the baseline relays, and answers
 * the gateway's tool calls with a result (the arguments echoed back). Prints
 * "ready" once connected and welcomed.
 *
 *   BENCH_DEVICE_TOKEN=<access token> node --import tsx bench/toolcall/device.ts <gateway port> <floor relay port> <redis relay port>
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WebSocket } from "ws";
import { DeviceFrameSchema } from "../../gen/switchyard/device/v1/device_frame_pb.js";

const [gatewayPort, floorPort, redisPort] = process.argv.slice(2);
const token = process.env.BENCH_DEVICE_TOKEN ?? "";

function open(url: string, protocols: string[] = [], headers: Record<string, string> = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols, { headers, perMessageDeflate: false });
  return new Promise((resolve, reject) => (ws.once("open", () => resolve(ws)), ws.once("error", reject)));
}

for (const port of [floorPort, redisPort]) {
  const ws = await open(`ws://127.0.0.1:${port}/`);
  ws.on("message", (data: Buffer) => ws.send(data)); // echo: the device's work is not what is measured
}

const gw = await open(`ws://127.0.0.1:${gatewayPort}/ws/device`, ["switchyard.device.v1+proto"], { authorization: `Bearer ${token}` });
const welcomed = new Promise<void>((resolve) => {
  gw.on("message", (data: Buffer) => {
    // An "echo" tool: the result is the call's arguments. It reads the frame
    // at the wire level, as the floor's device echoes bytes without parsing.
    const call = readToolCall(data);
    if (call === undefined) {
      if (fromBinary(DeviceFrameSchema, data).frame.case === "welcome") resolve();
      return;
    }
    gw.send(resultFrame(call.callIdBytes, call.args));
  });
});

/** The call id and argument bytes of a tool_call frame, or undefined for another frame. */
function readToolCall(frame: Buffer): { callIdBytes: Buffer; args: Buffer } | undefined {
  if (frame[0] !== 0x1a) return undefined;
  let pos = 1;
  const varint = () => {
    let n = 0;
    for (let shift = 0; ; shift += 7) {
      const b = frame[pos++]!;
      n += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return n;
    }
  };
  const end = varint() + pos;
  let callIdBytes: Buffer = Buffer.alloc(0);
  let args: Buffer = Buffer.alloc(0);
  while (pos < end) {
    const tag = varint();
    const len = varint();
    if (tag === 0x0a) callIdBytes = frame.subarray(pos, pos + len);
    else if (tag === 0x1a) args = frame.subarray(pos, pos + len);
    pos += len;
  }
  return { callIdBytes, args };
}

/** DeviceFrame{tool_result{call_id, result}}. */
function resultFrame(callId: Buffer, args: Buffer): Buffer {
  const inner = Buffer.concat([Buffer.from([0x0a, callId.length]), callId, Buffer.from([0x12]), varintBytes(args.length), args]);
  return Buffer.concat([Buffer.from([0x22]), varintBytes(inner.length), inner]);
}

function varintBytes(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}
gw.send(toBinary(DeviceFrameSchema, create(DeviceFrameSchema, { frame: { case: "hello", value: { deviceId: "bench-device", tools: [{ name: "echo" }] } } })));
await welcomed;
// Pings keep the connection alive across the run.
setInterval(() => gw.send(toBinary(DeviceFrameSchema, create(DeviceFrameSchema, { frame: { case: "ping", value: { nonce: 1n } } }))), 2000);
process.stdout.write("ready\n");
