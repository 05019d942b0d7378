/**
 * Opens N idle device connections (one user each, hello sent, welcome
 * awaited) to a gateway and holds them; prints "ready N" when all are open.
 *
 *   BENCH_PRIVATE_JWK=<private JWK json> node --import tsx bench/toolcall/sockets.ts <port> <n> <kid>
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { importJWK, SignJWT } from "jose";
import { WebSocket } from "ws";
import { DeviceFrameSchema } from "../../gen/switchyard/device/v1/device_frame_pb.js";

const [port, n, kid] = process.argv.slice(2) as [string, string, string];
const key = await importJWK(JSON.parse(process.env.BENCH_PRIVATE_JWK!), "ES256");
const now = Math.floor(Date.now() / 1000);
const sockets: WebSocket[] = [];

async function one(i: number): Promise<void> {
  const token = await new SignJWT({ tier: "free", roles: [] })
    .setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" })
    .setIssuer("switchyard-auth")
    .setAudience("switchyard")
    .setSubject(`idle-${i}`)
    .setIssuedAt(now)
    .setExpirationTime(now + 900)
    .sign(key);
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/device`, ["switchyard.device.v1+proto"], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
  sockets.push(ws);
  await new Promise<void>((resolve, reject) => {
    ws.once("error", reject);
    ws.once("open", () => ws.send(toBinary(DeviceFrameSchema, create(DeviceFrameSchema, { frame: { case: "hello", value: { deviceId: `dev-${i}`, tools: [{ name: "echo" }] } } }))));
    ws.on("message", (data: Buffer) => {
      if (fromBinary(DeviceFrameSchema, data).frame.case === "welcome") resolve();
    });
  });
}

const total = Number(n);
for (let i = 0; i < total; i += 250) {
  await Promise.all(Array.from({ length: Math.min(250, total - i) }, (_, j) => one(i + j)));
}
process.stdout.write(`ready ${sockets.length}\n`);
await new Promise(() => {}); // hold them until killed
