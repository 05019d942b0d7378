/**
 * The caller's side of a tool call, on any instance.
 *
 * The device is chosen from presence (cached, see presence-cache.ts), so "no
 * device online" is known at once. The call is published once to JetStream
 * (`sy.tools.<user>.<holder>`, Nats-Msg-Id = call id, so a retry on any
 * instance is a duplicate and joins the first call instead of running it
 * again); the stream's RePublish hands it to the holder instance, so nothing
 * reaches a device that the stream did not accept. The outcome comes back on
 * this instance's one result subject (`sy.results.*.<instance>`), where a map
 * of pending calls settles it; whoever decides it (the holder: the device's
 * result, a disconnect; this instance: the deadline, the holder's death) also
 * records it once in the result stream, where retries find it. No
 * subscription, timer or consumer per call.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { JetStreamManager } from "@nats-io/jetstream";
import { headers, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import { GatewayControlSchema, type PresenceEntry, type PresenceRecord } from "../gen/switchyard/device/v1/relay_pb.js";
import { isNatsConnected, type Logger } from "../platform/index.js";
import { MSG_ID } from "../platform/events/headers.js";
import type { GatewayBeats } from "./beats.js";
import { CALL_RETENTION_MS } from "./nats-setup.js";
import { createDeadlineWheel, type DeadlineHandle } from "./deadlines.js";
import { traceOutcomeReceived, tracedCallPublish } from "./tracing.js";
import type { PresenceCache } from "./presence-cache.js";
import type { GatewayNames } from "./subjects.js";
import { decodeOutcome, decodeRelayedCall, encodeOutcome, encodeRelayedCall, encodeToolCall, sendOutcome, type Outcome, type RelayedCall } from "./wire.js";

/** One call as the caller asks for it (already validated). */
export interface CallRequest {
  readonly callId: string;
  readonly userId: string;
  /** Empty: any device offering the tool. */
  readonly requestedDeviceId: string;
  readonly tool: string;
  /** The arguments encoded as a google.protobuf.Struct. */
  readonly argsBytes: Uint8Array;
  /** Epoch ms after which the call must not be delivered. */
  readonly deadline: number;
  readonly waitForDevice: boolean;
}

/** The caller's side of tool calls. */
export interface ToolCaller {
  /**
   * Runs a call; resolves with its outcome (the device's encoded ToolResult),
   * rejects with ConnectError for RPC-level failures (see device.proto).
   * `signal` aborting (the RPC was cancelled) gives the call up.
   */
  call(req: CallRequest, signal?: AbortSignal): Promise<Outcome>;
  /** Calls now waiting or in flight from this instance. */
  readonly pendingCount: number;
  /** Fails every pending call UNAVAILABLE (shutdown) and stops listening. */
  stop(): void;
}

/** What the caller needs. */
export interface CallerOptions {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly names: GatewayNames;
  readonly instanceId: string;
  readonly cache: PresenceCache;
  readonly beats: GatewayBeats;
  readonly maxPendingPerUser: number;
  readonly log: Logger;
}

interface Pending {
  readonly req: CallRequest;
  /** Handed to the bus as its owner: this instance records the failures it decides. */
  published: boolean;
  /** An earlier call with this id exists: this one waits for its outcome. */
  joined: boolean;
  sessionId: string;
  instance: string;
  settled: boolean;
  deadline: DeadlineHandle | undefined;
  readonly cleanup: (() => void)[];
  resolve(o: Outcome): void;
  reject(e: ConnectError): void;
  readonly promise: Promise<Outcome>;
}

/** How long after a first call's deadline a joining retry waits for its recorded outcome. */
const joinGraceMs = 2_000;

/** Creates the caller's side on this instance. */
export function createToolCaller(o: CallerOptions): ToolCaller {
  const { names, instanceId } = o;
  const pending = new Map<string, Pending>();
  const perUser = new Map<string, number>();
  const wheel = createDeadlineWheel(25);

  const settle = (p: Pending, outcome: Outcome | ConnectError) => {
    if (p.settled) return;
    p.settled = true;
    if (p.deadline !== undefined) wheel.cancel(p.deadline);
    for (const fn of p.cleanup) fn();
    if (pending.get(p.req.callId) === p) pending.delete(p.req.callId);
    const n = (perUser.get(p.req.userId) ?? 1) - 1;
    if (n <= 0) perUser.delete(p.req.userId);
    else perUser.set(p.req.userId, n);
    if (outcome instanceof ConnectError) return p.reject(outcome);
    if (outcome.failure !== undefined) return p.reject(new ConnectError(outcome.failure.message, outcome.failure.code as Code));
    p.resolve(outcome);
  };

  /** Settles with a failure this instance decided, recording it if the call was handed out (first writer wins). */
  const fail = (p: Pending, code: Code, message: string) => {
    if (p.settled) return;
    if (p.published) {
      const outcome = encodeOutcome({ callId: p.req.callId, sessionId: "", deviceId: "", failure: { code, message } });
      sendOutcome(o.nc, names.resultDelivered(p.req.callId, instanceId), names.result(p.req.callId, instanceId), outcome);
    }
    settle(p, new ConnectError(message, code));
  };

  const sendCancel = (p: Pending, reason: string) => {
    const msg = create(GatewayControlSchema, { command: { case: "cancel", value: { callId: p.req.callId, sessionId: p.sessionId, reason, deadlineMs: BigInt(p.req.deadline) } } });
    try {
      o.nc.publish(names.control(p.instance), toBinary(GatewayControlSchema, msg));
    } catch {
      /* disconnected: the holder still stops it at the deadline */
    }
  };

  const subs: Subscription[] = [
    // Outcomes: the holder sends them here directly (and records them).
    o.nc.subscribe(names.resultsOf(instanceId), {
      callback: (err, msg) => {
        if (err) return;
        const p = pending.get(callIdOfResult(msg.subject));
        if (p === undefined || !p.published) return; // late, a duplicate, or a failure this instance recorded itself
        let outcome: Outcome;
        try {
          outcome = decodeOutcome(msg.data);
        } catch {
          return o.log.warn({ subject: msg.subject }, "undecodable tool-call outcome");
        }
        if (outcome.sessionId !== "" && outcome.sessionId !== p.sessionId) {
          return o.log.warn({ callId: outcome.callId }, "tool-call outcome from a connection the call was not sent to; ignored");
        }
        traceOutcomeReceived(msg.subject, msg.headers, outcome);
        settle(p, outcome);
      },
    }),
    // JetStream's acks of our publications: duplicates join the first call; refusals fail at once.
    o.nc.subscribe(names.acksOf(instanceId), {
      callback: (err, msg) => {
        if (err) return;
        const p = pending.get(callIdOfAck(msg.subject));
        if (p === undefined || !p.published) return;
        const ack = parsePublishAck(msg.data);
        if (ack.error !== undefined) {
          // Not stored, so never delivered: not recorded either, a retry may run it.
          settle(p, new ConnectError(`the message bus refused the call (${ack.error.description ?? "error"}); retry`, Code.Unavailable));
        } else if (ack.duplicate) void join(p, ack.seq ?? 0);
      },
    }),
  ];

  o.beats.onDead((instance) => {
    for (const p of [...pending.values()]) {
      if (p.published && p.instance === instance) {
        fail(p, Code.Unavailable, `the gateway instance holding the device stopped while the call was in flight; it may have run (call_id ${p.req.callId})`);
      }
    }
  });

  async function route(p: Pending): Promise<void> {
    const { req } = p;
    let entry: PresenceEntry;
    for (;;) {
      // Listen for a change before reading: a device that connects while the
      // record is read still wakes this call (read-then-listen would miss it).
      const changed = req.waitForDevice ? new Promise<void>((resolve) => p.cleanup.push(o.cache.onChange(req.userId, resolve))) : undefined;
      const record = await o.cache.get(req.userId);
      if (p.settled) return;
      const choice = choose(record, req, o.beats);
      if (choice.entry !== undefined) {
        entry = choice.entry;
        break;
      }
      if (changed === undefined) throw choice.error;
      await changed;
      if (p.settled) return;
    }
    p.sessionId = entry.sessionId;
    p.instance = entry.device!.gatewayInstance;
    const relayed = encodeRelayedCall({
      userId: req.userId,
      requestedDeviceId: req.requestedDeviceId,
      deviceId: entry.device!.deviceId,
      sessionId: entry.sessionId,
      replyInstance: instanceId,
      callId: req.callId,
      deadlineMs: req.deadline,
      toolCall: encodeToolCall(req.callId, req.tool, req.argsBytes, req.deadline),
    });
    const h = headers();
    h.set(MSG_ID, req.callId);
    p.published = true;
    // A plain publish with a reply subject: JetStream acks to our one ack
    // subscription, with no request state (inbox, timer, error) per call.
    const subject = names.call(req.userId, p.instance);
    tracedCallPublish(h, subject, req.callId, p.instance, () => o.nc.publish(subject, relayed, { headers: h, reply: names.ack(instanceId, req.callId) }));
  }

  /** A call with this id was published before (by any instance): wait for its one outcome. */
  async function join(p: Pending, seq: number): Promise<void> {
    p.published = false; // not the owner: it records nothing
    p.joined = true;
    if (pending.get(p.req.callId) === p) pending.delete(p.req.callId);
    const first = await o.jsm.direct.getMessage(names.callStream, { seq }).catch(() => null);
    if (p.settled) return;
    if (first === null) {
      return settle(p, new ConnectError(`call_id was used within the last ${CALL_RETENTION_MS / 60_000} minutes and its record is gone; use a new call_id`, Code.AlreadyExists));
    }
    let rc: RelayedCall;
    try {
      rc = decodeRelayedCall(first.data);
    } catch {
      return settle(p, new ConnectError("call_id was used by another kind of call", Code.AlreadyExists));
    }
    if (!sameRelayed(rc, p.req)) {
      return settle(p, new ConnectError("call_id was already used for a different user, device, tool or arguments", Code.AlreadyExists));
    }
    const sub = o.nc.subscribe(names.resultDelivered(p.req.callId, rc.replyInstance), {
      max: 1,
      callback: (err, msg) => {
        if (!err) settle(p, decodeOutcome(msg.data));
      },
    });
    p.cleanup.push(() => sub.unsubscribe());
    const recorded = () => o.jsm.direct.getMessage(names.resultStream, { last_by_subj: names.result(p.req.callId, rc.replyInstance) }).catch(() => null);
    const now = await recorded();
    if (p.settled) return; // its cleanup ran already: arm nothing more
    if (now !== null) return settle(p, decodeOutcome(now.data));
    const giveUp = async () => {
      const last = await recorded();
      if (last !== null) return settle(p, decodeOutcome(last.data));
      settle(p, new ConnectError("the first call with this call_id ended without a recorded outcome; it may have run", Code.Unavailable));
    };
    const wait = rc.deadlineMs + joinGraceMs - Date.now();
    if (wait <= 0) return giveUp();
    const t = setTimeout(() => void giveUp(), wait);
    p.cleanup.push(() => clearTimeout(t));
  }

  return {
    call(req, signal) {
      const existing = pending.get(req.callId);
      if (existing !== undefined) {
        if (!sameRequest(existing.req, req)) {
          return Promise.reject(new ConnectError("call_id was already used for a different user, device, tool or arguments", Code.AlreadyExists));
        }
        return existing.promise;
      }
      if (!isNatsConnected(o.nc)) return Promise.reject(new ConnectError("the message bus is unavailable; retry shortly", Code.Unavailable));
      const count = perUser.get(req.userId) ?? 0;
      if (count >= o.maxPendingPerUser) {
        return Promise.reject(
          new ConnectError(`too many tool calls are waiting for this user's devices (${count}); retry later`, Code.ResourceExhausted),
        );
      }
      perUser.set(req.userId, count + 1);
      let resolve!: (v: Outcome) => void;
      let reject!: (e: ConnectError) => void;
      const promise = new Promise<Outcome>((res, rej) => ((resolve = res), (reject = rej)));
      const p: Pending = { req, published: false, joined: false, sessionId: "", instance: "", settled: false, deadline: undefined, cleanup: [], resolve, reject, promise };
      pending.set(req.callId, p);
      p.deadline = wheel.add(req.deadline, () => {
        p.deadline = undefined;
        const failure = deadlineFailure(p);
        if (p.published) {
          sendCancel(p, "the deadline passed");
          fail(p, failure.code, failure.rawMessage);
        } else settle(p, failure);
      });
      if (signal !== undefined) {
        const onAbort = () => {
          const reason = signal.reason instanceof ConnectError ? signal.reason : new ConnectError("the call was cancelled", Code.Canceled);
          if (p.published) {
            sendCancel(p, "the caller gave up");
            fail(p, reason.code, reason.rawMessage);
          } else settle(p, reason);
        };
        if (signal.aborted) onAbort();
        else {
          signal.addEventListener("abort", onAbort, { once: true });
          p.cleanup.push(() => signal.removeEventListener("abort", onAbort));
        }
      }
      route(p).catch((err: unknown) =>
        settle(p, err instanceof ConnectError ? err : new ConnectError(`routing the call failed: ${(err as Error).message}`, Code.Unavailable)),
      );
      return promise;
    },
    get pendingCount() {
      return pending.size;
    },
    stop() {
      for (const s of subs) s.unsubscribe();
      wheel.stop();
      for (const p of [...pending.values()]) settle(p, new ConnectError("the gateway is shutting down; retry", Code.Unavailable));
    },
  };
}

/** The call id of a result subject (`…results.<call id>.<instance>`). */
export function callIdOfResult(subject: string): string {
  const end = subject.lastIndexOf(".");
  return subject.slice(subject.lastIndexOf(".", end - 1) + 1, end);
}

/** The call id of an ack subject (its last token). */
export function callIdOfAck(subject: string): string {
  return subject.slice(subject.lastIndexOf(".") + 1);
}

/** JetStream's acknowledgement of a publish; an empty body (no responders) or bad JSON is an error. */
export function parsePublishAck(data: Uint8Array): { seq?: number; duplicate?: boolean; error?: { description?: string } } {
  if (data.length === 0) return { error: { description: "JetStream is not available" } };
  try {
    return JSON.parse(new TextDecoder().decode(data)) as { seq?: number; duplicate?: boolean };
  } catch {
    return { error: { description: "malformed acknowledgement" } };
  }
}

/** How a call ends when its deadline passes, by where it got to: handed out, joined to an earlier one, waiting for a device, or not yet routed. */
export function deadlineFailure(p: { readonly published: boolean; readonly joined: boolean; readonly req: Pick<CallRequest, "waitForDevice"> }): ConnectError {
  if (p.published) return new ConnectError("the call's deadline passed before the device answered; it may have run", Code.DeadlineExceeded);
  if (p.joined) return new ConnectError("the deadline passed while waiting for the first call with this call_id", Code.DeadlineExceeded);
  if (p.req.waitForDevice) return new ConnectError("no eligible device of the user connected before the deadline", Code.Unavailable);
  return new ConnectError("the call's deadline passed", Code.DeadlineExceeded);
}

/** Picks the device: the named one, else the most recently connected live one offering the tool. */
function choose(record: PresenceRecord, req: CallRequest, beats: GatewayBeats): { entry?: PresenceEntry; error: ConnectError } {
  let best: PresenceEntry | undefined;
  let bestTime = -1;
  let connected = 0;
  for (const e of record.entries) {
    const d = e.device;
    if (d === undefined || !beats.isAlive(d.gatewayInstance)) continue;
    if (req.requestedDeviceId !== "" && d.deviceId !== req.requestedDeviceId) continue;
    connected++;
    if (!d.tools.some((t) => t.name === req.tool)) continue;
    const t = d.connectTime ? timestampMs(d.connectTime) : 0;
    if (t > bestTime) {
      best = e;
      bestTime = t;
    }
  }
  if (best !== undefined) return { entry: best, error: undefined as never };
  if (connected === 0) {
    const what = req.requestedDeviceId === "" ? "no device of the user is connected" : `device ${req.requestedDeviceId} is not connected`;
    return { error: new ConnectError(what, Code.Unavailable) };
  }
  return { error: new ConnectError(`no connected device of the user offers the tool "${req.tool}"`, Code.FailedPrecondition) };
}

function sameRequest(a: CallRequest, b: CallRequest): boolean {
  return a.userId === b.userId && a.requestedDeviceId === b.requestedDeviceId && a.tool === b.tool && Buffer.compare(a.argsBytes, b.argsBytes) === 0;
}

function sameRelayed(rc: RelayedCall, req: CallRequest): boolean {
  if (rc.userId !== req.userId || rc.requestedDeviceId !== req.requestedDeviceId) return false;
  // The first call's ToolCall bytes, re-encoded from its parts for comparison.
  const expected = encodeToolCall(req.callId, req.tool, req.argsBytes, rc.deadlineMs);
  return Buffer.compare(rc.toolCall, expected) === 0;
}
