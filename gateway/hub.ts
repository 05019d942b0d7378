/**
 * The holder's side: the device connections of this instance and what flows
 * to and from them. Calls for this instance arrive on one core subject (the
 * RePublish of the call stream); each names the connection it is for, and
 * only that connection receives it, and only before its deadline. Outcomes
 * go straight to the caller's result subject and are recorded in the result
 * stream with "expected last subject sequence 0", so each call has one
 * recorded outcome whoever decides it. A connection that closes fails its
 * calls in flight at once.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import type { WebSocket } from "ws";
import { DeviceFrameSchema, WelcomeSchema, type Hello } from "../gen/switchyard/device/v1/device_frame_pb.js";
import { GatewayControlSchema, PresenceEntrySchema, type PresenceEntry } from "../gen/switchyard/device/v1/relay_pb.js";
import type { Logger, Principal } from "../platform/index.js";
import type { VerifyAccessToken } from "./auth.js";
import type { FrameProtocol } from "./codec.js";
import { createDeadlineWheel, type DeadlineHandle } from "./deadlines.js";
import type { Notifications } from "./notifications.js";
import type { PresenceStore } from "./presence.js";
import { DeviceSession, type SessionHost } from "./session.js";
import { endDelivery, startDelivery, startDeviceRoundTrip } from "./tracing.js";
import type { GatewayNames } from "./subjects.js";
import { decodeRelayedCall, encodeOutcome, sendOutcome, toolCallFrame, type Outcome, type RelayedCall } from "./wire.js";

/** Limits of the hub. */
export interface HubLimits {
  readonly heartbeatMs: number;
  readonly maxFrameBytes: number;
  readonly maxConnectionsPerUser: number;
  readonly maxInflightPerUser: number;
  readonly maxSendBufferBytes: number;
  readonly framesPerSecond: number;
}

/** What the hub needs. */
export interface HubOptions {
  readonly nc: NatsConnection;
  readonly names: GatewayNames;
  readonly instanceId: string;
  readonly presence: PresenceStore;
  readonly notifications: Notifications;
  readonly verify: VerifyAccessToken;
  readonly limits: HubLimits;
  readonly log: Logger;
}

/** The device connections of this instance. */
export interface DeviceHub {
  /** Takes over an upgraded socket whose credential was checked. */
  accept(ws: WebSocket, protocol: FrameProtocol, principal: Principal): DeviceSession;
  /** Connections of `userId` open on this instance. */
  countUser(userId: string): number;
  /** Connections open on this instance. */
  readonly size: number;
  /**
   * Puts this instance's open connections back into presence where other
   * instances dropped them while this one looked dead (call it on
   * GatewayBeats.onResumed); a connection whose device is listed elsewhere
   * meanwhile is closed ABORTED. Failures are logged.
   */
  restorePresence(): Promise<void>;
  /** Closes every connection (fatal UNAVAILABLE: reconnect elsewhere) and clears its presence. */
  stop(): Promise<void>;
}

/** Creates the hub and starts listening for this instance's calls. */
export function createDeviceHub(o: HubOptions): DeviceHub {
  const { names, instanceId, limits, log } = o;
  const sessions = new Map<string, DeviceSession>();
  const byUser = new Map<string, Set<DeviceSession>>();
  const inflightPerUser = new Map<string, number>();
  const detachers = new Map<DeviceSession, () => void>();
  /** The presence entries of registered sessions, to restore them after a stall. */
  const entries = new Map<DeviceSession, PresenceEntry>();
  const removals = new Set<Promise<void>>();

  const bump = (userId: string, d: number) => {
    const n = (inflightPerUser.get(userId) ?? 0) + d;
    if (n <= 0) inflightPerUser.delete(userId);
    else inflightPerUser.set(userId, n);
  };

  const wheel = createDeadlineWheel(25);
  /** Cancels that overtook their call (core subject vs the stream's RePublish), kept until the call arrives or its deadline. */
  const cancelledEarly = new Map<string, DeadlineHandle>();

  /** Sends the call's outcome to its caller and records it (first writer wins). */
  const finish = (rc: RelayedCall, outcome: Omit<Outcome, "callId">) => {
    const traced = endDelivery(rc, outcome.failure?.code ?? 0, outcome.failure?.message);
    sendOutcome(o.nc, names.resultDelivered(rc.callId, rc.replyInstance), names.result(rc.callId, rc.replyInstance), encodeOutcome({ ...outcome, callId: rc.callId }), traced);
  };
  const failCall = (rc: RelayedCall, code: Code, message: string) => finish(rc, { sessionId: rc.sessionId, deviceId: rc.deviceId, failure: { code, message } });

  const deliver = (s: DeviceSession, rc: RelayedCall) => {
    const deadline = rc.deadlineMs;
    if (deadline <= Date.now()) return bump(s.userId, -1); // never delivered after its deadline; the caller reports it
    const handle = wheel.add(deadline, () => {
      if (s.inflight.get(rc.callId)?.rc !== rc) return;
      s.inflight.delete(rc.callId);
      bump(s.userId, -1);
      endDelivery(rc, Code.DeadlineExceeded, "the deadline passed before the device answered");
      s.send(create(DeviceFrameSchema, { frame: { case: "cancelToolCall", value: { callId: rc.callId, reason: "the deadline passed" } } }));
    });
    s.inflight.set(rc.callId, { rc, deadline: handle });
    startDeviceRoundTrip(rc);
    s.sendFrameBytes(toolCallFrame(rc.toolCall));
  };

  const onCall = (data: Uint8Array, msg?: Msg) => {
    let rc: RelayedCall;
    try {
      rc = decodeRelayedCall(data);
    } catch {
      return log.warn("undecodable relayed tool call");
    }
    if (Date.now() >= rc.deadlineMs) return; // the caller gave up already: never deliver
    const tombstone = cancelledEarly.get(rc.callId);
    if (tombstone !== undefined) {
      cancelledEarly.delete(rc.callId);
      return wheel.cancel(tombstone); // the caller gave up and recorded that outcome
    }
    if (msg !== undefined) startDelivery(rc, msg.subject, msg.headers);
    const s = sessions.get(rc.sessionId);
    if (s === undefined || s.closed || s.userId !== rc.userId) {
      return failCall(rc, Code.Unavailable, "the device is no longer connected; the call was not delivered");
    }
    if (s.inflight.has(rc.callId) || s.early.some((e) => e.callId === rc.callId)) return;
    if ((inflightPerUser.get(rc.userId) ?? 0) >= limits.maxInflightPerUser) {
      return failCall(rc, Code.ResourceExhausted, `too many calls in flight on the user's devices (${limits.maxInflightPerUser}); retry later`);
    }
    bump(rc.userId, 1);
    if (!s.ready) s.early.push(rc);
    else deliver(s, rc);
  };

  const onControl = (data: Uint8Array) => {
    let c;
    try {
      c = fromBinary(GatewayControlSchema, data).command;
    } catch {
      return;
    }
    if (c.case === "kick") sessions.get(c.value.sessionId)?.fatal(Code.Aborted, c.value.reason);
    else if (c.case === "cancel") {
      const { callId, deadlineMs } = c.value;
      const s = sessions.get(c.value.sessionId);
      const i = s === undefined ? -1 : s.early.findIndex((e) => e.callId === callId);
      const inflight = s?.inflight.get(callId);
      if (s !== undefined && i >= 0) {
        endDelivery(s.early.splice(i, 1)[0]!, Code.Canceled, c.value.reason);
        bump(s.userId, -1);
      } else if (s !== undefined && inflight !== undefined) {
        endDelivery(inflight.rc, Code.Canceled, c.value.reason);
        wheel.cancel(inflight.deadline);
        s.inflight.delete(callId);
        bump(s.userId, -1);
        s.send(create(DeviceFrameSchema, { frame: { case: "cancelToolCall", value: { callId, reason: c.value.reason } } }));
      } else if (Number(deadlineMs) > Date.now() && !cancelledEarly.has(callId)) {
        // Not here yet: it may still come through the stream.
        cancelledEarly.set(callId, wheel.add(Number(deadlineMs), () => cancelledEarly.delete(callId)));
      }
    }
  };

  const subs: Subscription[] = [
    o.nc.subscribe(names.deliverAll(instanceId), { callback: (err, msg) => void (err || onCall(msg.data, msg)) }),
    o.nc.subscribe(names.control(instanceId), { callback: (err, msg) => void (err || onControl(msg.data)) }),
  ];

  const host: SessionHost = {
    log,
    verify: o.verify,
    framesPerSecond: limits.framesPerSecond,
    maxSendBufferBytes: limits.maxSendBufferBytes,

    async hello(s: DeviceSession, hello: Hello) {
      // Same device connected here already: the newer connection takes over.
      for (const other of byUser.get(s.userId) ?? []) {
        if (other !== s && other.deviceId === hello.deviceId && other.helloReceived) other.fatal(Code.Aborted, "taken over by a newer connection of this device");
      }
      const entry = create(PresenceEntrySchema, {
        sessionId: s.id,
        device: {
          name: `users/${s.userId}/devices/${hello.deviceId}`,
          deviceId: hello.deviceId,
          userId: s.userId,
          deviceName: hello.deviceName,
          platform: hello.platform,
          gatewayInstance: instanceId,
          connectTime: timestampFromMs(s.openedAt),
          tools: hello.tools,
          appVersion: hello.appVersion,
        },
      });
      const { replaced } = await o.presence.add(s.userId, entry, limits.maxConnectionsPerUser);
      if (s.closed) return void (await o.presence.remove(s.userId, s.id));
      s.registered = true;
      entries.set(s, entry);
      for (const r of replaced) {
        const kick = create(GatewayControlSchema, { command: { case: "kick", value: { sessionId: r.sessionId, reason: "taken over by a newer connection of this device" } } });
        if (r.device?.gatewayInstance === instanceId) sessions.get(r.sessionId)?.fatal(Code.Aborted, "taken over by a newer connection of this device");
        else o.nc.publish(names.control(r.device!.gatewayInstance), toBinary(GatewayControlSchema, kick));
      }
      const attachment = await o.notifications.attach(s.userId, {
        after: hello.lastNotificationSequence,
        strict: false,
        deliver: (n) => void s.send(create(DeviceFrameSchema, { frame: { case: "notification", value: n } })),
        fail: (err) => s.fatal(Code.Unavailable, `notification delivery failed (${err.rawMessage}); reconnect`),
      });
      if (s.closed) return attachment.detach();
      detachers.set(s, attachment.detach);
      s.welcome = create(WelcomeSchema, {
        sessionId: s.id,
        userId: s.userId,
        deviceId: hello.deviceId,
        heartbeatInterval: durationFromMs(limits.heartbeatMs),
        authExpireTime: timestampFromMs(s.principal.expiresAt),
        latestNotificationSequence: attachment.latest,
        replayTruncated: attachment.truncated,
        maxFrameBytes: limits.maxFrameBytes,
      });
      s.send(create(DeviceFrameSchema, { frame: { case: "welcome", value: s.welcome } }));
      s.ready = true;
      for (const rc of s.early.splice(0)) deliver(s, rc);
      await attachment.start();
    },

    toolResult(s, inflight, toolResult) {
      const rc = inflight.rc;
      wheel.cancel(inflight.deadline);
      s.inflight.delete(rc.callId);
      bump(s.userId, -1);
      finish(rc, { sessionId: s.id, deviceId: rc.deviceId, toolResult });
    },

    closed(s) {
      sessions.delete(s.id);
      const set = byUser.get(s.userId);
      set?.delete(s);
      if (set?.size === 0) byUser.delete(s.userId);
      for (const rc of s.early.splice(0)) {
        bump(s.userId, -1);
        failCall(rc, Code.Unavailable, "the device disconnected before the call was delivered");
      }
      for (const { rc, deadline } of s.inflight.values()) {
        wheel.cancel(deadline);
        bump(s.userId, -1);
        failCall(rc, Code.Unavailable, "the device disconnected while the call was in flight; it may have run");
      }
      s.inflight.clear();
      detachers.get(s)?.();
      detachers.delete(s);
      entries.delete(s);
      if (s.registered) {
        const r = o.presence.remove(s.userId, s.id).finally(() => removals.delete(r));
        removals.add(r);
      }
    },
  };

  const sweepEveryMs = Math.max(50, Math.floor(limits.heartbeatMs / 2));
  let lastSweep = Date.now();
  const sweepTimer = setInterval(() => {
    const now = Date.now();
    // A sweep far later than scheduled means this process did not run (a
    // stop, a long pause): its devices were silent because it did not
    // listen, so they are not judged on that time.
    const stalled = now - lastSweep > 2 * sweepEveryMs;
    lastSweep = now;
    for (const s of sessions.values()) s.sweep(now, limits.heartbeatMs, stalled);
  }, sweepEveryMs);
  sweepTimer.unref();

  return {
    accept(ws, protocol, principal) {
      const s = new DeviceSession(ws, protocol, principal, host);
      sessions.set(s.id, s);
      let set = byUser.get(s.userId);
      if (set === undefined) byUser.set(s.userId, (set = new Set()));
      set.add(s);
      return s;
    },
    countUser: (userId) => byUser.get(userId)?.size ?? 0,
    async restorePresence() {
      for (const [s, entry] of [...entries]) {
        if (s.closed) continue;
        try {
          const outcome = await o.presence.restore(s.userId, entry);
          if (outcome === "taken-over") s.fatal(Code.Aborted, "taken over by a newer connection of this device");
          else if (s.closed) await o.presence.remove(s.userId, s.id); // closed meanwhile: its own removal may have come first
        } catch (err) {
          log.warn({ err: String(err), session: s.id }, "restoring presence failed");
        }
      }
    },
    get size() {
      return sessions.size;
    },
    async stop() {
      clearInterval(sweepTimer);
      wheel.stop();
      cancelledEarly.clear();
      for (const sub of subs) sub.unsubscribe();
      for (const s of [...sessions.values()]) s.fatal(Code.Unavailable, "the gateway is shutting down: reconnect");
      await Promise.allSettled([...removals]);
    },
  };
}

