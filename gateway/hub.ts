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
import { DeviceFrameSchema, WelcomeSchema, type Hello, type Welcome } from "../gen/switchyard/device/v1/device_frame_pb.js";
import { GatewayControlSchema, PresenceEntrySchema, type CancelCall, type PresenceEntry } from "../gen/switchyard/device/v1/relay_pb.js";
import type { Logger, Principal } from "../platform/index.js";
import type { VerifyAccessToken } from "./auth.js";
import type { FrameProtocol } from "./codec.js";
import { createDeadlineWheel, type DeadlineHandle, type DeadlineWheel } from "./deadlines.js";
import type { Attachment, Notifications } from "./notifications.js";
import type { PresenceStore } from "./presence.js";
import { DeviceSession, type SessionHost } from "./session.js";
import { endDelivery, startDelivery, startDeviceRoundTrip } from "./tracing.js";
import type { GatewayNames } from "./subjects.js";
import { decodeRelayedCall, encodeOutcome, sendOutcome, toolCallFrame, withTraceparent, type Outcome, type RelayedCall } from "./wire.js";

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

/** Calls in flight per user on this instance (delivered or waiting for welcome). */
export interface InflightCounts {
  /** Adds `d` (±1) to `userId`'s count; a count reaching 0 is forgotten. */
  add(userId: string, d: number): void;
  /** `userId`'s count. */
  of(userId: string): number;
}

/** Creates empty per-user in-flight counts. */
export function createInflightCounts(): InflightCounts {
  const counts = new Map<string, number>();
  return {
    add(userId, d) {
      const n = (counts.get(userId) ?? 0) + d;
      if (n <= 0) counts.delete(userId);
      else counts.set(userId, n);
    },
    of: (userId) => counts.get(userId) ?? 0,
  };
}

/**
 * Cancels that overtook their call (the cancel comes on a core subject, the
 * call through the stream's RePublish), kept until the call arrives or its
 * deadline passes.
 */
export interface EarlyCancels {
  /** Remembers a cancel of `callId` until `deadlineMs` (if that is still ahead of `now` and it is not remembered yet). */
  remember(callId: string, deadlineMs: number, now: number): void;
  /** True (and forgotten) when `callId` was cancelled before it arrived. */
  take(callId: string): boolean;
  /** Forgets them all (shutdown). */
  clear(): void;
}

/** Creates the early-cancel tombstones, each expiring on `wheel` at its call's deadline. */
export function createEarlyCancels(wheel: Pick<DeadlineWheel, "add" | "cancel">): EarlyCancels {
  const tombstones = new Map<string, DeadlineHandle>();
  return {
    remember(callId, deadlineMs, now) {
      if (deadlineMs > now && !tombstones.has(callId)) tombstones.set(callId, wheel.add(deadlineMs, () => tombstones.delete(callId)));
    },
    take(callId) {
      const tombstone = tombstones.get(callId);
      if (tombstone === undefined) return false;
      tombstones.delete(callId);
      wheel.cancel(tombstone);
      return true;
    },
    clear: () => tombstones.clear(),
  };
}

/** What becomes of a relayed call that reached this instance in time (see admitCall). */
export type Admission = "unavailable" | "duplicate" | "exhausted" | "hold" | "deliver";

/**
 * Decides a relayed call for the session it names: not here (or closed, or
 * another user's) → unavailable; already held → duplicate; over the user's
 * in-flight limit → exhausted; before welcome → hold; else deliver.
 */
export function admitCall(
  rc: Pick<RelayedCall, "callId" | "userId">,
  s: Pick<DeviceSession, "closed" | "userId" | "inflight" | "early" | "ready"> | undefined,
  inflightOfUser: number,
  maxInflightPerUser: number,
): Admission {
  if (s === undefined || s.closed || s.userId !== rc.userId) return "unavailable";
  if (s.inflight.has(rc.callId) || s.early.some((e) => e.callId === rc.callId)) return "duplicate";
  if (inflightOfUser >= maxInflightPerUser) return "exhausted";
  return s.ready ? "deliver" : "hold";
}

/** The presence entry of a session that said hello, held by `instanceId`. */
export function presenceEntryOf(s: Pick<DeviceSession, "id" | "userId" | "openedAt">, hello: Hello, instanceId: string): PresenceEntry {
  return create(PresenceEntrySchema, {
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
}

/** The welcome of a registered session, with where its notifications resume. */
export function welcomeOf(
  s: Pick<DeviceSession, "id" | "userId"> & { readonly principal: Pick<Principal, "expiresAt"> },
  hello: Pick<Hello, "deviceId">,
  attachment: Pick<Attachment, "latest" | "truncated">,
  limits: Pick<HubLimits, "heartbeatMs" | "maxFrameBytes">,
): Welcome {
  return create(WelcomeSchema, {
    sessionId: s.id,
    userId: s.userId,
    deviceId: hello.deviceId,
    heartbeatInterval: durationFromMs(limits.heartbeatMs),
    authExpireTime: timestampFromMs(s.principal.expiresAt),
    latestNotificationSequence: attachment.latest,
    replayTruncated: attachment.truncated,
    maxFrameBytes: limits.maxFrameBytes,
  });
}

/** How often the hub sweeps its sessions (heartbeats, hello and auth deadlines). */
export function sweepIntervalMs(heartbeatMs: number): number {
  return Math.max(50, Math.floor(heartbeatMs / 2));
}

/**
 * Whether a sweep at `now` comes far later than scheduled: this process did
 * not run (a stop, a long pause), so its devices were silent because it did
 * not listen, and they are not judged on that time.
 */
export function isStalledSweep(now: number, lastSweep: number, everyMs: number): boolean {
  return now - lastSweep > 2 * everyMs;
}

/** What the stages of the hub share. */
interface HubState {
  readonly o: HubOptions;
  readonly sessions: Map<string, DeviceSession>;
  readonly byUser: Map<string, Set<DeviceSession>>;
  readonly inflight: InflightCounts;
  readonly wheel: DeadlineWheel;
  readonly cancelledEarly: EarlyCancels;
  /** Stops a registered session's notification delivery. */
  readonly detachers: Map<DeviceSession, () => void>;
  /** The presence entries of registered sessions, to restore them after a stall. */
  readonly entries: Map<DeviceSession, PresenceEntry>;
  /** Presence removals under way, awaited by stop(). */
  readonly removals: Set<Promise<void>>;
}

/** Creates the hub and starts listening for this instance's calls. */
export function createDeviceHub(o: HubOptions): DeviceHub {
  const wheel = createDeadlineWheel(25);
  const st: HubState = {
    o,
    sessions: new Map(),
    byUser: new Map(),
    inflight: createInflightCounts(),
    wheel,
    cancelledEarly: createEarlyCancels(wheel),
    detachers: new Map(),
    entries: new Map(),
    removals: new Set(),
  };
  const subs: Subscription[] = [
    o.nc.subscribe(o.names.deliverAll(o.instanceId), { callback: (err, msg) => void (err || onRelayedCall(st, msg.data, msg)) }),
    o.nc.subscribe(o.names.control(o.instanceId), { callback: (err, msg) => void (err || onControl(st, msg.data)) }),
  ];
  const host = createSessionHost(st);
  const stopSweeper = startSweeper(st);
  return {
    accept(ws, protocol, principal) {
      const s = new DeviceSession(ws, protocol, principal, host);
      st.sessions.set(s.id, s);
      let set = st.byUser.get(s.userId);
      if (set === undefined) st.byUser.set(s.userId, (set = new Set()));
      set.add(s);
      return s;
    },
    countUser: (userId) => st.byUser.get(userId)?.size ?? 0,
    restorePresence: () => restorePresence(st),
    get size() {
      return st.sessions.size;
    },
    async stop() {
      stopSweeper();
      wheel.stop();
      st.cancelledEarly.clear();
      for (const sub of subs) sub.unsubscribe();
      for (const s of [...st.sessions.values()]) s.fatal(Code.Unavailable, "the gateway is shutting down: reconnect");
      await Promise.allSettled([...st.removals]);
    },
  };
}

/** Sends the call's outcome to its caller and records it (first writer wins). */
function finishCall(st: HubState, rc: RelayedCall, outcome: Omit<Outcome, "callId">): void {
  const { nc, names } = st.o;
  const traced = endDelivery(rc, outcome.failure?.code ?? 0, outcome.failure?.message);
  sendOutcome(nc, names.resultDelivered(rc.callId, rc.replyInstance), names.result(rc.callId, rc.replyInstance), encodeOutcome({ ...outcome, callId: rc.callId }), traced);
}

/** Ends a call with a failure decided here. */
function failCall(st: HubState, rc: RelayedCall, code: Code, message: string): void {
  finishCall(st, rc, { sessionId: rc.sessionId, deviceId: rc.deviceId, failure: { code, message } });
}

/** Hands a call to its device, armed to be cancelled on the device at its deadline; never after the deadline. */
function deliverToDevice(st: HubState, s: DeviceSession, rc: RelayedCall): void {
  const deadline = rc.deadlineMs;
  if (deadline <= Date.now()) return st.inflight.add(s.userId, -1); // never delivered after its deadline; the caller reports it
  const handle = st.wheel.add(deadline, () => {
    if (s.inflight.get(rc.callId)?.rc !== rc) return;
    s.inflight.delete(rc.callId);
    st.inflight.add(s.userId, -1);
    endDelivery(rc, Code.DeadlineExceeded, "the deadline passed before the device answered");
    s.send(create(DeviceFrameSchema, { frame: { case: "cancelToolCall", value: { callId: rc.callId, reason: "the deadline passed" } } }));
  });
  s.inflight.set(rc.callId, { rc, deadline: handle });
  const traceparent = startDeviceRoundTrip(rc);
  s.sendFrameBytes(toolCallFrame(traceparent === undefined ? rc.toolCall : withTraceparent(rc.toolCall, traceparent)));
}

/** A call for one of this instance's connections, from the call stream's RePublish. */
function onRelayedCall(st: HubState, data: Uint8Array, msg?: Msg): void {
  let rc: RelayedCall;
  try {
    rc = decodeRelayedCall(data);
  } catch {
    return st.o.log.warn("undecodable relayed tool call");
  }
  if (Date.now() >= rc.deadlineMs) return; // the caller gave up already: never deliver
  if (st.cancelledEarly.take(rc.callId)) return; // the caller gave up and recorded that outcome
  if (msg !== undefined) startDelivery(rc, msg.subject, msg.headers);
  const s = st.sessions.get(rc.sessionId);
  const { maxInflightPerUser } = st.o.limits;
  switch (admitCall(rc, s, st.inflight.of(rc.userId), maxInflightPerUser)) {
    case "unavailable":
      return failCall(st, rc, Code.Unavailable, "the device is no longer connected; the call was not delivered");
    case "duplicate":
      return;
    case "exhausted":
      return failCall(st, rc, Code.ResourceExhausted, `too many calls in flight on the user's devices (${maxInflightPerUser}); retry later`);
    case "hold":
      st.inflight.add(rc.userId, 1);
      return void s!.early.push(rc);
    case "deliver":
      st.inflight.add(rc.userId, 1);
      return deliverToDevice(st, s!, rc);
  }
}

/** A command for this instance: kick a session (taken over elsewhere) or cancel a call. */
function onControl(st: HubState, data: Uint8Array): void {
  let c;
  try {
    c = fromBinary(GatewayControlSchema, data).command;
  } catch {
    return;
  }
  if (c.case === "kick") st.sessions.get(c.value.sessionId)?.fatal(Code.Aborted, c.value.reason);
  else if (c.case === "cancel") cancelCall(st, c.value);
}

/** Cancels a call wherever it is here: waiting for welcome, on the device (told to stop), or not arrived yet (remembered). */
function cancelCall(st: HubState, cancel: CancelCall): void {
  const { callId, deadlineMs, reason } = cancel;
  const s = st.sessions.get(cancel.sessionId);
  const i = s === undefined ? -1 : s.early.findIndex((e) => e.callId === callId);
  const inflight = s?.inflight.get(callId);
  if (s !== undefined && i >= 0) {
    endDelivery(s.early.splice(i, 1)[0]!, Code.Canceled, reason);
    st.inflight.add(s.userId, -1);
  } else if (s !== undefined && inflight !== undefined) {
    endDelivery(inflight.rc, Code.Canceled, reason);
    st.wheel.cancel(inflight.deadline);
    s.inflight.delete(callId);
    st.inflight.add(s.userId, -1);
    s.send(create(DeviceFrameSchema, { frame: { case: "cancelToolCall", value: { callId, reason } } }));
  } else {
    // Not here yet: it may still come through the stream.
    st.cancelledEarly.remember(callId, Number(deadlineMs), Date.now());
  }
}

/** The hub as its sessions see it. */
function createSessionHost(st: HubState): SessionHost {
  const { log, verify, limits } = st.o;
  return {
    log,
    verify,
    framesPerSecond: limits.framesPerSecond,
    maxSendBufferBytes: limits.maxSendBufferBytes,
    hello: (s, hello) => registerSession(st, s, hello),
    toolResult(s, inflight, toolResult) {
      const rc = inflight.rc;
      st.wheel.cancel(inflight.deadline);
      s.inflight.delete(rc.callId);
      st.inflight.add(s.userId, -1);
      finishCall(st, rc, { sessionId: s.id, deviceId: rc.deviceId, toolResult });
    },
    closed: (s) => releaseSession(st, s),
  };
}

/** After hello: presence (taking over the same device), notifications, welcome, then the calls that waited for it. */
async function registerSession(st: HubState, s: DeviceSession, hello: Hello): Promise<void> {
  // Same device connected here already: the newer connection takes over.
  for (const other of st.byUser.get(s.userId) ?? []) {
    if (other !== s && other.deviceId === hello.deviceId && other.helloReceived) other.fatal(Code.Aborted, "taken over by a newer connection of this device");
  }
  if (!(await addToPresence(st, s, hello))) return;
  const attachment = await st.o.notifications.attach(s.userId, {
    after: hello.lastNotificationSequence,
    strict: false,
    deliver: (n) => void s.send(create(DeviceFrameSchema, { frame: { case: "notification", value: n } })),
    fail: (err) => s.fatal(Code.Unavailable, `notification delivery failed (${err.rawMessage}); reconnect`),
  });
  if (s.closed) return attachment.detach();
  st.detachers.set(s, attachment.detach);
  s.welcome = welcomeOf(s, hello, attachment, st.o.limits);
  s.send(create(DeviceFrameSchema, { frame: { case: "welcome", value: s.welcome } }));
  s.ready = true;
  for (const rc of s.early.splice(0)) deliverToDevice(st, s, rc);
  await attachment.start();
}

/** Lists the session in presence and kicks the connections it replaced; false when it closed meanwhile (and is removed again). */
async function addToPresence(st: HubState, s: DeviceSession, hello: Hello): Promise<boolean> {
  const { nc, names, instanceId, presence, limits } = st.o;
  const entry = presenceEntryOf(s, hello, instanceId);
  const { replaced } = await presence.add(s.userId, entry, limits.maxConnectionsPerUser);
  if (s.closed) {
    await presence.remove(s.userId, s.id);
    return false;
  }
  s.registered = true;
  st.entries.set(s, entry);
  for (const r of replaced) {
    const kick = create(GatewayControlSchema, { command: { case: "kick", value: { sessionId: r.sessionId, reason: "taken over by a newer connection of this device" } } });
    if (r.device?.gatewayInstance === instanceId) st.sessions.get(r.sessionId)?.fatal(Code.Aborted, "taken over by a newer connection of this device");
    else nc.publish(names.control(r.device!.gatewayInstance), toBinary(GatewayControlSchema, kick));
  }
  return true;
}

/** A closed session: its calls fail at once (UNAVAILABLE), its notifications stop, its presence is removed. */
function releaseSession(st: HubState, s: DeviceSession): void {
  st.sessions.delete(s.id);
  const set = st.byUser.get(s.userId);
  set?.delete(s);
  if (set?.size === 0) st.byUser.delete(s.userId);
  for (const rc of s.early.splice(0)) {
    st.inflight.add(s.userId, -1);
    failCall(st, rc, Code.Unavailable, "the device disconnected before the call was delivered");
  }
  for (const { rc, deadline } of s.inflight.values()) {
    st.wheel.cancel(deadline);
    st.inflight.add(s.userId, -1);
    failCall(st, rc, Code.Unavailable, "the device disconnected while the call was in flight; it may have run");
  }
  s.inflight.clear();
  st.detachers.get(s)?.();
  st.detachers.delete(s);
  st.entries.delete(s);
  if (s.registered) {
    const r = st.o.presence.remove(s.userId, s.id).finally(() => st.removals.delete(r));
    st.removals.add(r);
  }
}

/** Sweeps every session periodically, telling them when the sweep itself was stalled; returns the stop function. */
function startSweeper(st: HubState): () => void {
  const { heartbeatMs } = st.o.limits;
  const everyMs = sweepIntervalMs(heartbeatMs);
  let lastSweep = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    const stalled = isStalledSweep(now, lastSweep, everyMs);
    lastSweep = now;
    for (const s of st.sessions.values()) s.sweep(now, heartbeatMs, stalled);
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** Puts the open sessions back into presence after this instance looked dead; one listed elsewhere meanwhile is closed ABORTED. */
async function restorePresence(st: HubState): Promise<void> {
  for (const [s, entry] of [...st.entries]) {
    if (s.closed) continue;
    try {
      const outcome = await st.o.presence.restore(s.userId, entry);
      if (outcome === "taken-over") s.fatal(Code.Aborted, "taken over by a newer connection of this device");
      else if (s.closed) await st.o.presence.remove(s.userId, s.id); // closed meanwhile: its own removal may have come first
    } catch (err) {
      st.o.log.warn({ err: String(err), session: s.id }, "restoring presence failed");
    }
  }
}
