/**
 * The device process: echoes raw frames from the baseline relays, and answers
 * the gateway's tool calls with a result (the arguments echoed back). Prints
 * "ready" once connected and welcomed.
 *
 *   node --import tsx bench/toolcall/device.ts <gateway port> <token> <floor relay port> <redis relay port>
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WebSocket } from "ws";
import { DeviceFrameSchema } from "../../gen/switchyard/device/v1/device_frame_pb.js";

const [gatewayPort, token, floorPort, redisPort] = process.argv.slice(2);

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
    const f = fromBinary(DeviceFrameSchema, data);
    if (f.frame.case === "welcome") resolve();
    else if (f.frame.case === "toolCall") {
      const call = f.frame.value;
      gw.send(toBinary(DeviceFrameSchema, create(DeviceFrameSchema, { frame: { case: "toolResult", value: { callId: call.callId, outcome: { case: "result", value: call.arguments ?? {} } } } })));
    }
  });
});
gw.send(toBinary(DeviceFrameSchema, create(DeviceFrameSchema, { frame: { case: "hello", value: { deviceId: "bench-device", tools: [{ name: "echo" }] } } })));
await welcomed;
// Pings keep the connection alive across the run.
setInterval(() => gw.send(toBinary(DeviceFrameSchema, create(DeviceFrameSchema, { frame: { case: "ping", value: { nonce: 1n } } }))), 2000);
process.stdout.write("ready\n");
