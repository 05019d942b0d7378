/**
 * The caller's side of a tool call, on any instance.
 *
 * The device is chosen from presence (cached, see presence-cache.ts), so "no
 * device online" is known at once. The call is published once to JetStream
 * (`sy.tools.<user>.<holder>`, Nats-Msg-Id = call id, so a retry on any
 * instance is a duplicate and joins the first call instead of running it
 * again); RePublish hands it to the holder instance. Its one outcome is
 * written by whoever decides it first (the holder: the device's result, a
 * disconnect; this instance: the deadline, the holder's death) to the result
 * stream, whose RePublish reaches this instance's one result subject, where a
 * map of pending calls settles them. No subscription and no consumer per call.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { JsonObject } from "@bufbuild/protobuf";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import {
  GatewayControlSchema,
  RelayedOutcomeSchema,
  RelayedToolCallSchema,
  type PresenceEntry,
  type PresenceRecord,
  type RelayedOutcome,
  type RelayedToolCall,
} from "../gen/switchyard/device/v1/relay_pb.js";
import type { Logger } from "../platform/log.js";
import { isNatsConnected } from "../platform/nats/connection.js";
import type { GatewayBeats } from "./beats.js";
import type { PresenceCache } from "./presence-cache.js";
import { structBytes } from "./codec.js";
import type { GatewayNames } from "./subjects.js";

/** One call as the caller asks for it (already validated). */
export interface CallRequest {
  readonly callId: string;
  readonly userId: string;
  /** Empty: any device offering the tool. */
  readonly requestedDeviceId: string;
  readonly tool: string;
  readonly arguments: JsonObject | undefined;
  /** The protobuf encoding of `arguments` (for size checks and retry comparison). */
  readonly argsBytes: Uint8Array;
  /** Epoch ms after which the call must not be delivered. */
  readonly deadline: number;
  readonly waitForDevice: boolean;
}

/** The caller's side of tool calls. */
export interface ToolCaller {
  /**
   * Runs a call; resolves with the recorded outcome (result or tool error),
   * rejects with ConnectError for RPC-level failures (see device.proto).
   * `signal` aborting (the RPC was cancelled) gives the call up.
   */
  call(req: CallRequest, signal?: AbortSignal): Promise<RelayedOutcome>;
  /** Calls now waiting or in flight from this instance. */
  readonly pendingCount: number;
  /** Fails every pending call UNAVAILABLE (shutdown) and stops listening. */
  stop(): void;
}

/** What the caller needs. */
export interface CallerOptions {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
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
  /** Set once the call is handed to the bus as its owner (this instance records failures). */
  published: boolean;
  /** Set when an earlier call with this id exists: this one waits for its outcome. */
  joined: boolean;
  sessionId: string;
  instance: string;
  settled: boolean;
  readonly stop: AbortController;
  readonly cleanup: (() => void)[];
  resolve(o: RelayedOutcome): void;
  reject(e: ConnectError): void;
  readonly promise: Promise<RelayedOutcome>;
}

/** How long after a first call's deadline a joining retry waits for its recorded outcome. */
const joinGraceMs = 2_000;

/** Creates the caller's side on this instance. */
export function createToolCaller(o: CallerOptions): ToolCaller {
  const { names, instanceId } = o;
  const pending = new Map<string, Pending>();
  const perUser = new Map<string, number>();

  const settle = (p: Pending, outcome: RelayedOutcome | ConnectError) => {
    if (p.settled) return;
    p.settled = true;
    p.stop.abort();
    for (const fn of p.cleanup) fn();
    if (pending.get(p.req.callId) === p) pending.delete(p.req.callId);
    const n = (perUser.get(p.req.userId) ?? 1) - 1;
    if (n <= 0) perUser.delete(p.req.userId);
    else perUser.set(p.req.userId, n);
    if (outcome instanceof ConnectError) return p.reject(outcome);
    if (outcome.outcome.case === "failure") return p.reject(new ConnectError(outcome.outcome.value.message, outcome.outcome.value.code as Code));
    p.resolve(outcome);
  };

  /** Records a failure this instance decided (first writer wins), then settles. */
  const fail = (p: Pending, code: Code, message: string) => {
    if (p.settled) return;
    if (p.published) {
      const outcome = create(RelayedOutcomeSchema, { callId: p.req.callId, outcome: { case: "failure", value: { code, message } } });
      o.js
        .publish(names.result(p.req.callId, instanceId), toBinary(RelayedOutcomeSchema, outcome), { expect: { lastSubjectSequence: 0 }, timeout: 2_000 })
        .catch(() => {}); // already recorded by the holder, or the bus is down: nothing more to do
    }
    settle(p, new ConnectError(message, code));
  };

  const sendCancel = (p: Pending, reason: string) => {
    const msg = create(GatewayControlSchema, { command: { case: "cancel", value: { callId: p.req.callId, sessionId: p.sessionId, reason } } });
    try {
      o.nc.publish(names.control(p.instance), toBinary(GatewayControlSchema, msg));
    } catch {
      /* disconnected: the holder still stops it at the deadline */
    }
  };

  const results: Subscription = o.nc.subscribe(names.resultsOf(instanceId), {
    callback: (err, msg) => {
      if (err) return;
      let outcome: RelayedOutcome;
      try {
        outcome = fromBinary(RelayedOutcomeSchema, msg.data);
      } catch {
        return o.log.warn({ subject: msg.subject }, "undecodable tool-call outcome");
      }
      const p = pending.get(outcome.callId);
      if (p === undefined || !p.published) return; // late, or a failure this instance recorded itself
      if (outcome.sessionId !== "" && outcome.sessionId !== p.sessionId) {
        return o.log.warn({ callId: outcome.callId }, "tool-call outcome from a connection the call was not sent to; ignored");
      }
      settle(p, outcome);
    },
  });

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
      const record = await o.cache.get(req.userId);
      if (p.settled) return;
      const choice = choose(record, req, o.beats);
      if (choice.entry !== undefined) {
        entry = choice.entry;
        break;
      }
      if (!req.waitForDevice) throw choice.error;
      await o.cache.changed(req.userId, p.stop.signal);
      if (p.settled) return;
    }
    p.sessionId = entry.sessionId;
    p.instance = entry.device!.gatewayInstance;
    const relayed = create(RelayedToolCallSchema, {
      userId: req.userId,
      requestedDeviceId: req.requestedDeviceId,
      deviceId: entry.device!.deviceId,
      sessionId: entry.sessionId,
      replyInstance: instanceId,
      call: { callId: req.callId, tool: req.tool, arguments: req.arguments, deadline: timestampFromMs(req.deadline) },
    });
    p.published = true;
    const timeout = Math.min(5_000, Math.max(100, req.deadline - Date.now()));
    o.js.publish(names.call(req.userId, p.instance), toBinary(RelayedToolCallSchema, relayed), { msgID: req.callId, timeout }).then(
      (ack) => {
        if (ack.duplicate) join(p, ack.seq);
      },
      (err: unknown) => {
        // Not recorded: the bus may or may not have taken it; the holder
        // records the device's outcome if it did, and a retry joins that.
        settle(p, new ConnectError(`could not hand the call to the message bus (${(err as Error).message}); retry`, Code.Unavailable));
      },
    );
  }

  /** A call with this id was published before (by any instance): wait for its one outcome. */
  async function join(p: Pending, seq: number): Promise<void> {
    p.published = false; // this instance is not the owner: it records nothing
    p.joined = true;
    if (pending.get(p.req.callId) === p) pending.delete(p.req.callId);
    const first = await o.jsm.direct.getMessage(names.callStream, { seq }).catch(() => null);
    if (p.settled) return;
    if (first === null) {
      return settle(p, new ConnectError("call_id was used within the last 10 minutes and its record is gone; use a new call_id", Code.AlreadyExists));
    }
    let rc: RelayedToolCall;
    try {
      rc = fromBinary(RelayedToolCallSchema, first.data);
    } catch {
      return settle(p, new ConnectError("call_id was used by another kind of call", Code.AlreadyExists));
    }
    if (!sameRelayed(rc, p.req)) {
      return settle(p, new ConnectError("call_id was already used for a different user, device, tool or arguments", Code.AlreadyExists));
    }
    const sub = o.nc.subscribe(names.resultDelivered(p.req.callId, rc.replyInstance), {
      max: 1,
      callback: (err, msg) => {
        if (!err) settle(p, fromBinary(RelayedOutcomeSchema, msg.data));
      },
    });
    p.cleanup.push(() => sub.unsubscribe());
    const recorded = await o.jsm.direct.getMessage(names.resultStream, { last_by_subj: names.result(p.req.callId, rc.replyInstance) }).catch(() => null);
    if (recorded !== null) return settle(p, fromBinary(RelayedOutcomeSchema, recorded.data));
    const firstDeadline = rc.call?.deadline ? timestampMs(rc.call.deadline) : 0;
    const unknown = () =>
      settle(p, new ConnectError("the first call with this call_id ended without a recorded outcome; it may have run", Code.Unavailable));
    const wait = firstDeadline + joinGraceMs - Date.now();
    if (wait <= 0) return unknown();
    const t = setTimeout(unknown, wait);
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
      let resolve!: (v: RelayedOutcome) => void;
      let reject!: (e: ConnectError) => void;
      const promise = new Promise<RelayedOutcome>((res, rej) => ((resolve = res), (reject = rej)));
      const p: Pending = { req, published: false, joined: false, sessionId: "", instance: "", settled: false, stop: new AbortController(), cleanup: [], resolve, reject, promise };
      pending.set(req.callId, p);
      const onDeadline = () => {
        if (p.published) {
          sendCancel(p, "the deadline passed");
          fail(p, Code.DeadlineExceeded, "the call's deadline passed before the device answered; it may have run");
        } else if (p.joined) {
          settle(p, new ConnectError("the deadline passed while waiting for the first call with this call_id", Code.DeadlineExceeded));
        } else if (req.waitForDevice) {
          settle(p, new ConnectError("no eligible device of the user connected before the deadline", Code.Unavailable));
        } else settle(p, new ConnectError("the call's deadline passed", Code.DeadlineExceeded));
      };
      const timer = setTimeout(onDeadline, Math.max(0, req.deadline - Date.now()));
      p.cleanup.push(() => clearTimeout(timer));
      if (signal !== undefined) {
        const onAbort = () => {
          if (p.published) sendCancel(p, "the caller gave up");
          const reason = signal.reason instanceof ConnectError ? signal.reason : new ConnectError("the call was cancelled", Code.Canceled);
          if (p.published) fail(p, reason.code, reason.rawMessage);
          else settle(p, reason);
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
      results.unsubscribe();
      for (const p of [...pending.values()]) settle(p, new ConnectError("the gateway is shutting down; retry", Code.Unavailable));
    },
  };
}

/** Picks the device: the named one, else the most recently connected live one offering the tool. */
function choose(record: PresenceRecord, req: CallRequest, beats: GatewayBeats): { entry?: PresenceEntry; error: ConnectError } {
  let candidates = record.entries.filter((e) => e.device !== undefined && beats.isAlive(e.device.gatewayInstance));
  if (req.requestedDeviceId !== "") candidates = candidates.filter((e) => e.device!.deviceId === req.requestedDeviceId);
  if (candidates.length === 0) {
    const what = req.requestedDeviceId === "" ? "no device of the user is connected" : `device ${req.requestedDeviceId} is not connected`;
    return { error: new ConnectError(what, Code.Unavailable) };
  }
  let best: PresenceEntry | undefined;
  let bestTime = -1;
  for (const e of candidates) {
    if (!e.device!.tools.some((t) => t.name === req.tool)) continue;
    const t = e.device!.connectTime ? timestampMs(e.device!.connectTime) : 0;
    if (t > bestTime) {
      best = e;
      bestTime = t;
    }
  }
  if (best === undefined) {
    return { error: new ConnectError(`no connected device of the user offers the tool "${req.tool}"`, Code.FailedPrecondition) };
  }
  return { entry: best, error: undefined as never };
}

function sameRequest(a: CallRequest, b: CallRequest): boolean {
  return a.userId === b.userId && a.requestedDeviceId === b.requestedDeviceId && a.tool === b.tool && Buffer.compare(a.argsBytes, b.argsBytes) === 0;
}

function sameRelayed(rc: RelayedToolCall, req: CallRequest): boolean {
  const args = structBytes(rc.call?.arguments);
  return rc.userId === req.userId && rc.requestedDeviceId === req.requestedDeviceId && rc.call?.tool === req.tool && Buffer.compare(args, req.argsBytes) === 0;
}
