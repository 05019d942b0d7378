/** The holder's decisions that need no server: in-flight counts, early cancels, call admission, presence entry, welcome, stalled sweeps. */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { test } from "node:test";
import { HelloSchema } from "../gen/switchyard/device/v1/device_frame_pb.js";
import { Platform } from "../gen/switchyard/device/v1/device_pb.js";
import type { DeadlineHandle } from "./deadlines.js";
import { admitCall, createEarlyCancels, createInflightCounts, isStalledSweep, presenceEntryOf, sweepIntervalMs, welcomeOf } from "./hub.js";
import type { Inflight } from "./session.js";
import type { RelayedCall } from "./wire.js";

test("in-flight counts go up and down per user and forget a user at zero", () => {
  const counts = createInflightCounts();
  counts.add("u1", 1);
  counts.add("u1", 1);
  counts.add("u2", 1);
  assert.equal(counts.of("u1"), 2);
  counts.add("u1", -1);
  counts.add("u1", -1);
  counts.add("u1", -1); // never below zero
  assert.equal(counts.of("u1"), 0);
  counts.add("u1", 1);
  assert.equal(counts.of("u1"), 1);
  assert.equal(counts.of("u2"), 1);
});

/** A wheel whose deadlines fire only when the test says so. */
function manualWheel() {
  const armed = new Set<DeadlineHandle>();
  return {
    armed,
    add: (at: number, fn: () => void) => {
      const h = { slot: at, fn };
      armed.add(h);
      return h;
    },
    cancel: (h: DeadlineHandle) => void armed.delete(h),
    fire() {
      for (const h of [...armed]) (armed.delete(h), h.fn());
    },
  };
}

test("a cancel that overtakes its call stops that call once, and only until the call's deadline", () => {
  const wheel = manualWheel();
  const early = createEarlyCancels(wheel);
  early.remember("c1", 2_000, 1_000);
  early.remember("c1", 3_000, 1_000); // remembered once
  assert.equal(wheel.armed.size, 1);
  assert.equal(early.take("c1"), true);
  assert.equal(wheel.armed.size, 0); // its expiry is disarmed
  assert.equal(early.take("c1"), false);

  early.remember("past", 500, 1_000); // its deadline passed: the call will never be delivered anyway
  assert.equal(early.take("past"), false);

  early.remember("c2", 2_000, 1_000);
  wheel.fire(); // the deadline passed without the call arriving
  assert.equal(early.take("c2"), false);

  early.remember("c3", 2_000, 1_000);
  early.clear();
  assert.equal(early.take("c3"), false);
});

const rc = (callId: string, userId = "u1") => ({ callId, userId }) as RelayedCall;
const session = (over: Partial<{ closed: boolean; userId: string; ready: boolean; inflight: Map<string, Inflight>; early: RelayedCall[] }> = {}) => ({
  closed: false,
  userId: "u1",
  ready: true,
  inflight: new Map<string, Inflight>(),
  early: [] as RelayedCall[],
  ...over,
});

test("a relayed call is delivered, held for welcome, or refused by where its connection is", () => {
  assert.equal(admitCall(rc("c"), session(), 0, 2), "deliver");
  assert.equal(admitCall(rc("c"), session({ ready: false }), 0, 2), "hold");
  assert.equal(admitCall(rc("c"), undefined, 0, 2), "unavailable");
  assert.equal(admitCall(rc("c"), session({ closed: true }), 0, 2), "unavailable");
  assert.equal(admitCall(rc("c", "u2"), session(), 0, 2), "unavailable"); // another user's connection
  assert.equal(admitCall(rc("c"), session(), 2, 2), "exhausted");
});

test("a relayed call already held or delivered here is a duplicate, even over the limit", () => {
  assert.equal(admitCall(rc("c"), session({ early: [rc("c")] }), 5, 2), "duplicate");
  assert.equal(admitCall(rc("c"), session({ inflight: new Map([["c", { rc: rc("c"), deadline: { slot: 0, fn: () => {} } }]]) }), 5, 2), "duplicate");
});

const hello = create(HelloSchema, { deviceId: "laptop", deviceName: "Laptop", platform: Platform.LINUX, appVersion: "1.2.3", tools: [{ name: "ls" }] });

test("the presence entry names the device, its holder instance and when it connected", () => {
  const e = presenceEntryOf({ id: "s1", userId: "u1", openedAt: 1_700_000_000_123 }, hello, "gw-a");
  assert.equal(e.sessionId, "s1");
  assert.equal(e.device?.name, "users/u1/devices/laptop");
  assert.equal(e.device?.gatewayInstance, "gw-a");
  assert.equal(timestampMs(e.device!.connectTime!), 1_700_000_000_123);
  assert.deepEqual(e.device?.tools.map((t) => t.name), ["ls"]);
  assert.equal(e.device?.appVersion, "1.2.3");
  assert.equal(e.device?.platform, Platform.LINUX);
});

test("the welcome carries the heartbeat, the credential's expiry and where notifications resume", () => {
  const w = welcomeOf({ id: "s1", userId: "u1", principal: { expiresAt: 1_700_000_060_000 } }, hello, { latest: 9n, truncated: true }, { heartbeatMs: 1_500, maxFrameBytes: 65_536 });
  assert.equal(w.sessionId, "s1");
  assert.equal(w.deviceId, "laptop");
  assert.equal(Number(w.heartbeatInterval?.seconds) * 1000 + (w.heartbeatInterval?.nanos ?? 0) / 1e6, 1_500);
  assert.equal(timestampMs(w.authExpireTime!), 1_700_000_060_000);
  assert.equal(w.latestNotificationSequence, 9n);
  assert.equal(w.replayTruncated, true);
  assert.equal(w.maxFrameBytes, 65_536);
});

test("a sweep far later than scheduled is a stall of this process, not silence of its devices", () => {
  assert.equal(sweepIntervalMs(10_000), 5_000);
  assert.equal(sweepIntervalMs(40), 50); // never busier than every 50 ms
  assert.equal(isStalledSweep(1_000 + 5_000, 1_000, 5_000), false);
  assert.equal(isStalledSweep(1_000 + 10_000, 1_000, 5_000), false);
  assert.equal(isStalledSweep(1_000 + 10_001, 1_000, 5_000), true);
});
