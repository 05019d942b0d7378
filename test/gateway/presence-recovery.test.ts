/**
 * Presence survives a holder that stalls without dying: gateway B is frozen
 * (SIGSTOP) long enough for A to judge it dead, a write of the user's
 * presence on A drops B's entries meanwhile (as it must for an instance that
 * really died), and when B resumes its device, still connected, is listed
 * and callable again without reconnecting.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";
import {
  connectDevice,
  eventually,
  newUser,
  rpcClients,
  startGatewayFixture,
  type GatewayFixture,
  type GatewayProcess,
  type TestDevice,
  type TestKeys,
} from "./support.js";

const HEARTBEAT_MS = 1000;
/**
 * How long a condition may take to become true before the test fails: a
 * bound for a stuck gateway, never a measure of speed (each wait ends as soon
 * as its condition holds). B's device survives the freeze however long it
 * lasts: a gateway does not count its own stall as its devices' silence.
 */
const PATIENCE_MS = 30_000;

let fx: GatewayFixture;
let keys: TestKeys;
let a: GatewayProcess, b: GatewayProcess;
let devices: TestDevice[];

before(async () => {
  fx = await startGatewayFixture({ count: 2, env: { GATEWAY_HEARTBEAT_MS: String(HEARTBEAT_MS) } });
  ({ keys, devices } = fx);
  [a, b] = fx.gateways as [GatewayProcess, GatewayProcess];
});

after(async () => {
  await fx?.close();
});

test("a holder that stalls past its heartbeat gets its connected devices back into presence when it resumes", async () => {
  const user = newUser();
  const token = await keys.mint(user);
  const agent = rpcClients(a.baseUrl, await keys.mint("agent-runner", { roles: ["service"] }));
  devices.push(await connectDevice(b.port, { token, deviceId: "on-b", onCall: () => ({ from: "on-b" }) }));
  const listed = async () => (await agent.devices.listDevices({ userId: user })).devices.map((x) => x.deviceId).join(",");
  assert.equal(await listed(), "on-b");

  b.child.kill("SIGSTOP");
  try {
    await eventually(async () => (await listed()) === "", PATIENCE_MS, "A to judge the frozen B dead");
    // A writes the user's presence record while B looks dead.
    devices.push(await connectDevice(a.port, { token, deviceId: "on-a" }));
  } finally {
    b.child.kill("SIGCONT");
  }

  assert.equal(devices[0]!.ws.readyState, WebSocket.OPEN, "B's device stays connected through the freeze");
  await eventually(async () => (await listed()) === "on-a,on-b", PATIENCE_MS, "B's device to be listed again after B resumed");
  const res = await agent.devices.callTool({ userId: user, deviceId: "on-b", tool: "echo" });
  assert.deepEqual(res.outcome.value, { from: "on-b" });
});
