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
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { JetStreamManager } from "@nats-io/jetstream";
import { headers, type Msg, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import { CancelCallByIdSchema, GatewayControlSchema, type CancelCallById, type PresenceEntry, type PresenceRecord } from "../gen/switchyard/device/v1/relay_pb.js";
import { isNatsConnected, type Logger } from "../platform/index.js";
import { MSG_ID } from "../platform/events/headers.js";
import type { GatewayBeats } from "./beats.js";
import { CALL_RETENTION_MS } from "./nats-setup.js";
import { createDeadlineWheel, type DeadlineHandle, type DeadlineWheel } from "./deadlines.js";
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
   * `signal` aborting (the RPC was cancelled) gives the call up; without a
   * signal the call runs to its outcome or deadline (CallTool keep_running).
   */
  call(req: CallRequest, signal?: AbortSignal): Promise<Outcome>;
  /** Stops the call `callId` of `userId` on whichever instance has it pending (CancelToolCall); a no-op where none has. */
  cancel(userId: string, callId: string, reason: string): void;
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

/** One call of this instance until it settles. */
export interface Pending {
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

/** The calls of this instance not yet settled, and how many each user has. */
export interface PendingCalls {
  /** Opens the pending record of `req` (counted against its user). */
  open(req: CallRequest): Pending;
  /** The pending call with this id that this instance still listens for. */
  get(callId: string): Pending | undefined;
  /** Stops answering `p`'s id here (it joined an earlier call) without settling it. */
  unlist(p: Pending): void;
  /** Settles `p` once: the outcome's failure or a ConnectError rejects, anything else resolves; cleanups run. */
  settle(p: Pending, outcome: Outcome | ConnectError): void;
  /** Calls of `userId` not yet settled. */
  countOf(userId: string): number;
  /** Every listed call (a copy). */
  all(): Pending[];
  /** Listed calls. */
  readonly size: number;
}

/** Creates the pending-call bookkeeping; deadlines armed on `wheel` are cancelled when a call settles. */
export function createPendingCalls(wheel: Pick<DeadlineWheel, "cancel">): PendingCalls {
  const pending = new Map<string, Pending>();
  const perUser = new Map<string, number>();
  return {
    open(req) {
      perUser.set(req.userId, (perUser.get(req.userId) ?? 0) + 1);
      let resolve!: (v: Outcome) => void;
      let reject!: (e: ConnectError) => void;
      const promise = new Promise<Outcome>((res, rej) => ((resolve = res), (reject = rej)));
      const p: Pending = { req, published: false, joined: false, sessionId: "", instance: "", settled: false, deadline: undefined, cleanup: [], resolve, reject, promise };
      pending.set(req.callId, p);
      return p;
    },
    get: (callId) => pending.get(callId),
    unlist(p) {
      if (pending.get(p.req.callId) === p) pending.delete(p.req.callId);
    },
    settle(p, outcome) {
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
    },
    countOf: (userId) => perUser.get(userId) ?? 0,
    all: () => [...pending.values()],
    get size() {
      return pending.size;
    },
  };
}

/** What the stages of the caller share. */
interface CallerContext {
  readonly o: CallerOptions;
  readonly pending: PendingCalls;
  readonly wheel: DeadlineWheel;
}

/** Creates the caller's side on this instance. */
export function createToolCaller(o: CallerOptions): ToolCaller {
  const wheel = createDeadlineWheel(25);
  const ctx: CallerContext = { o, pending: createPendingCalls(wheel), wheel };
  const subs = listenForOutcomes(ctx);
  o.beats.onDead((instance) => failCallsHeldBy(ctx, instance));
  return {
    call: (req, signal) => startCall(ctx, req, signal),
    cancel(userId, callId, reason) {
      const msg = create(CancelCallByIdSchema, { userId, callId, reason });
      // To every instance: only the one that published the call has it pending.
      o.nc.publish(o.names.callCancel, toBinary(CancelCallByIdSchema, msg));
    },
    get pendingCount() {
      return ctx.pending.size;
    },
    stop() {
      for (const s of subs) s.unsubscribe();
      wheel.stop();
      for (const p of ctx.pending.all()) ctx.pending.settle(p, new ConnectError("the gateway is shutting down; retry", Code.Unavailable));
    },
  };
}

/** Admits a call (or joins the same one pending here), arms its deadline and cancellation, and routes it. */
function startCall(ctx: CallerContext, req: CallRequest, signal: AbortSignal | undefined): Promise<Outcome> {
  const { o, pending } = ctx;
  const existing = pending.get(req.callId);
  if (existing !== undefined) {
    if (!sameRequest(existing.req, req)) {
      return Promise.reject(new ConnectError("call_id was already used for a different user, device, tool or arguments", Code.AlreadyExists));
    }
    return existing.promise;
  }
  if (!isNatsConnected(o.nc)) return Promise.reject(new ConnectError("the message bus is unavailable; retry shortly", Code.Unavailable));
  const count = pending.countOf(req.userId);
  if (count >= o.maxPendingPerUser) {
    return Promise.reject(new ConnectError(`too many tool calls are waiting for this user's devices (${count}); retry later`, Code.ResourceExhausted));
  }
  const p = pending.open(req);
  armDeadline(ctx, p);
  if (signal !== undefined) armAbort(ctx, p, signal);
  routeCall(ctx, p).catch((err: unknown) =>
    pending.settle(p, err instanceof ConnectError ? err : new ConnectError(`routing the call failed: ${(err as Error).message}`, Code.Unavailable)),
  );
  return p.promise;
}

/** At the deadline: a call handed out is cancelled at its holder and its failure recorded; otherwise it just ends. */
function armDeadline(ctx: CallerContext, p: Pending): void {
  p.deadline = ctx.wheel.add(p.req.deadline, () => {
    p.deadline = undefined;
    const failure = deadlineFailure(p);
    if (p.published) {
      sendCancel(ctx, p, "the deadline passed");
      failDecided(ctx, p, failure.code, failure.rawMessage);
    } else ctx.pending.settle(p, failure);
  });
}

/** Stops a call here: a call handed out is cancelled at its holder and `reason` recorded as its outcome; otherwise it just ends. */
function stopCall(ctx: CallerContext, p: Pending, reason: ConnectError, why: string): void {
  if (p.published) {
    sendCancel(ctx, p, why);
    failDecided(ctx, p, reason.code, reason.rawMessage);
  } else ctx.pending.settle(p, reason);
}

/** When the RPC is cancelled: the same as a deadline, with the signal's reason. */
function armAbort(ctx: CallerContext, p: Pending, signal: AbortSignal): void {
  const onAbort = () => {
    const reason = signal.reason instanceof ConnectError ? signal.reason : new ConnectError("the call was cancelled", Code.Canceled);
    stopCall(ctx, p, reason, "the caller gave up");
  };
  if (signal.aborted) onAbort();
  else {
    signal.addEventListener("abort", onAbort, { once: true });
    p.cleanup.push(() => signal.removeEventListener("abort", onAbort));
  }
}

/** Settles with a failure this instance decided, recording it if the call was handed out (first writer wins). */
function failDecided(ctx: CallerContext, p: Pending, code: Code, message: string): void {
  if (p.settled) return;
  if (p.published) {
    const { nc, names, instanceId } = ctx.o;
    const outcome = encodeOutcome({ callId: p.req.callId, sessionId: "", deviceId: "", failure: { code, message } });
    sendOutcome(nc, names.resultDelivered(p.req.callId, instanceId), names.result(p.req.callId, instanceId), outcome);
  }
  ctx.pending.settle(p, new ConnectError(message, code));
}

/** Tells the holder instance to stop the call (it also stops it at the deadline by itself). */
function sendCancel(ctx: CallerContext, p: Pending, reason: string): void {
  const msg = create(GatewayControlSchema, { command: { case: "cancel", value: { callId: p.req.callId, sessionId: p.sessionId, reason, deadlineMs: BigInt(p.req.deadline) } } });
  try {
    ctx.o.nc.publish(ctx.o.names.control(p.instance), toBinary(GatewayControlSchema, msg));
  } catch {
    /* disconnected: the holder still stops it at the deadline */
  }
}

/** A holder instance died: its calls in flight fail now (they may have run). */
function failCallsHeldBy(ctx: CallerContext, instance: string): void {
  for (const p of ctx.pending.all()) {
    if (p.published && p.instance === instance) {
      failDecided(ctx, p, Code.Unavailable, `the gateway instance holding the device stopped while the call was in flight; it may have run (call_id ${p.req.callId})`);
    }
  }
}

/** The two subscriptions of this instance: outcomes of its calls, and JetStream's acks of its publications. */
function listenForOutcomes(ctx: CallerContext): Subscription[] {
  const { nc, names, instanceId } = ctx.o;
  return [
    // Outcomes: the holder sends them here directly (and records them).
    nc.subscribe(names.resultsOf(instanceId), { callback: (err, msg) => void (err || onOutcome(ctx, msg)) }),
    // JetStream's acks of our publications: duplicates join the first call; refusals fail at once.
    nc.subscribe(names.acksOf(instanceId), { callback: (err, msg) => void (err || onPublishAck(ctx, msg)) }),
    // CancelToolCall, from any instance: acted on where the call is pending.
    nc.subscribe(names.callCancel, { callback: (err, msg) => void (err || onCancelById(ctx, msg)) }),
  ];
}

/** A CancelToolCall: stops the named call if this instance has it pending for that user. */
function onCancelById(ctx: CallerContext, msg: Msg): void {
  let c: CancelCallById;
  try {
    c = fromBinary(CancelCallByIdSchema, msg.data);
  } catch {
    return ctx.o.log.warn({ subject: msg.subject }, "undecodable call cancel");
  }
  const p = ctx.pending.get(c.callId);
  if (p === undefined || p.settled || p.req.userId !== c.userId) return;
  const why = c.reason || "the caller cancelled the call";
  stopCall(ctx, p, new ConnectError(why, Code.Canceled), why);
}

/** An outcome on this instance's result subject settles its pending call. */
function onOutcome(ctx: CallerContext, msg: Msg): void {
  const p = ctx.pending.get(callIdOfResult(msg.subject));
  if (p === undefined || !p.published) return; // late, a duplicate, or a failure this instance recorded itself
  let outcome: Outcome;
  try {
    outcome = decodeOutcome(msg.data);
  } catch {
    return ctx.o.log.warn({ subject: msg.subject }, "undecodable tool-call outcome");
  }
  if (outcome.sessionId !== "" && outcome.sessionId !== p.sessionId) {
    return ctx.o.log.warn({ callId: outcome.callId }, "tool-call outcome from a connection the call was not sent to; ignored");
  }
  traceOutcomeReceived(msg.subject, msg.headers, outcome);
  ctx.pending.settle(p, outcome);
}

/** JetStream's ack of a call's publication: a refusal fails it at once, a duplicate joins the first call. */
function onPublishAck(ctx: CallerContext, msg: Msg): void {
  const p = ctx.pending.get(callIdOfAck(msg.subject));
  if (p === undefined || !p.published) return;
  const ack = parsePublishAck(msg.data);
  if (ack.error !== undefined) {
    // Not stored, so never delivered: not recorded either, a retry may run it.
    ctx.pending.settle(p, new ConnectError(`the message bus refused the call (${ack.error.description ?? "error"}); retry`, Code.Unavailable));
  } else if (ack.duplicate) void joinFirstCall(ctx, p, ack.seq ?? 0);
}

/** Waits (if asked) for an eligible device in presence, then publishes the call to it. */
async function routeCall(ctx: CallerContext, p: Pending): Promise<void> {
  const { req } = p;
  const { cache, beats } = ctx.o;
  let entry: PresenceEntry;
  for (;;) {
    // Listen for a change before reading: a device that connects while the
    // record is read still wakes this call (read-then-listen would miss it).
    const changed = req.waitForDevice ? new Promise<void>((resolve) => p.cleanup.push(cache.onChange(req.userId, resolve))) : undefined;
    const record = await cache.get(req.userId);
    if (p.settled) return;
    const choice = chooseDevice(record, req, beats);
    if (choice.entry !== undefined) {
      entry = choice.entry;
      break;
    }
    if (changed === undefined) throw choice.error;
    await changed;
    if (p.settled) return;
  }
  publishCall(ctx, p, entry);
}

/** Publishes the call to the stream of `entry`'s holder, Nats-Msg-Id = call id, acked to this instance's ack subject. */
function publishCall(ctx: CallerContext, p: Pending, entry: PresenceEntry): void {
  const { nc, names, instanceId } = ctx.o;
  const { req } = p;
  p.sessionId = entry.sessionId;
  p.instance = entry.device!.gatewayInstance;
  const relayed = relayedCallOf(req, entry, instanceId);
  const h = headers();
  h.set(MSG_ID, req.callId);
  p.published = true;
  // A plain publish with a reply subject: JetStream acks to our one ack
  // subscription, with no request state (inbox, timer, error) per call.
  const subject = names.call(req.userId, p.instance);
  tracedCallPublish(h, subject, req.callId, p.instance, () => nc.publish(subject, relayed, { headers: h, reply: names.ack(instanceId, req.callId) }));
}

/** A call with this id was published before (by any instance): wait for its one outcome. */
async function joinFirstCall(ctx: CallerContext, p: Pending, seq: number): Promise<void> {
  const { nc, jsm, names } = ctx.o;
  const { pending } = ctx;
  p.published = false; // not the owner: it records nothing
  p.joined = true;
  pending.unlist(p);
  const first = await jsm.direct.getMessage(names.callStream, { seq }).catch(() => null);
  if (p.settled) return;
  const refusal = joinRefusal(first, p.req);
  if (refusal !== undefined) return pending.settle(p, refusal);
  const rc = decodeRelayedCall(first!.data);
  // The holder delivers the outcome, then records it a moment later. A join
  // listening after the delivery and reading before the record would miss
  // both, so it listens to the record's publication as well.
  const settleWith = (err: Error | null, msg: Msg) => {
    if (!err) pending.settle(p, decodeOutcome(msg.data));
  };
  const subs = [
    nc.subscribe(names.resultDelivered(p.req.callId, rc.replyInstance), { max: 1, callback: settleWith }),
    nc.subscribe(names.result(p.req.callId, rc.replyInstance), { max: 1, callback: settleWith }),
  ];
  p.cleanup.push(() => subs.forEach((sub) => sub.unsubscribe()));
  const recorded = () => jsm.direct.getMessage(names.resultStream, { last_by_subj: names.result(p.req.callId, rc.replyInstance) }).catch(() => null);
  const now = await recorded();
  if (p.settled) return; // its cleanup ran already: arm nothing more
  if (now !== null) return pending.settle(p, decodeOutcome(now.data));
  const giveUp = async () => {
    const last = await recorded();
    if (last !== null) return pending.settle(p, decodeOutcome(last.data));
    pending.settle(p, new ConnectError("the first call with this call_id ended without a recorded outcome; it may have run", Code.Unavailable));
  };
  const wait = rc.deadlineMs + joinGraceMs - Date.now();
  if (wait <= 0) return void (await giveUp());
  const t = setTimeout(() => void giveUp(), wait);
  p.cleanup.push(() => clearTimeout(t));
}

/** Why a retry may not join the first call stored with its id (`first`, null when no longer kept); undefined when it may. */
export function joinRefusal(first: { readonly data: Uint8Array } | null, req: CallRequest): ConnectError | undefined {
  if (first === null) {
    return new ConnectError(`call_id was used within the last ${CALL_RETENTION_MS / 60_000} minutes and its record is gone; use a new call_id`, Code.AlreadyExists);
  }
  let rc: RelayedCall;
  try {
    rc = decodeRelayedCall(first.data);
  } catch {
    return new ConnectError("call_id was used by another kind of call", Code.AlreadyExists);
  }
  if (!sameRelayed(rc, req)) return new ConnectError("call_id was already used for a different user, device, tool or arguments", Code.AlreadyExists);
  return undefined;
}

/** The relayed call this instance publishes for `req` to `entry`'s connection, answering to `replyInstance`. */
export function relayedCallOf(req: CallRequest, entry: PresenceEntry, replyInstance: string): Uint8Array {
  return encodeRelayedCall({
    userId: req.userId,
    requestedDeviceId: req.requestedDeviceId,
    deviceId: entry.device!.deviceId,
    sessionId: entry.sessionId,
    replyInstance,
    callId: req.callId,
    deadlineMs: req.deadline,
    toolCall: encodeToolCall(req.callId, req.tool, req.argsBytes, req.deadline),
  });
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

/** One decoder for every acknowledgement (one per call cost an allocation each). */
const utf8 = new TextDecoder();

/** JetStream's acknowledgement of a publish; an empty body (no responders) or bad JSON is an error. */
export function parsePublishAck(data: Uint8Array): { seq?: number; duplicate?: boolean; error?: { description?: string } } {
  if (data.length === 0) return { error: { description: "JetStream is not available" } };
  try {
    return JSON.parse(utf8.decode(data)) as { seq?: number; duplicate?: boolean };
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

/** Picks the device: the named one, else the most recently connected live one offering the tool; `error` says why none fits. */
export function chooseDevice(record: PresenceRecord, req: CallRequest, beats: Pick<GatewayBeats, "isAlive">): { entry?: PresenceEntry; error: ConnectError } {
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

/** Whether a retry asks for the same call (user, device, tool, arguments). */
export function sameRequest(a: CallRequest, b: CallRequest): boolean {
  return a.userId === b.userId && a.requestedDeviceId === b.requestedDeviceId && a.tool === b.tool && Buffer.compare(a.argsBytes, b.argsBytes) === 0;
}

/** Whether the stored first call `rc` is the call `req` asks for again. */
export function sameRelayed(rc: RelayedCall, req: CallRequest): boolean {
  if (rc.userId !== req.userId || rc.requestedDeviceId !== req.requestedDeviceId) return false;
  // The first call's ToolCall bytes, re-encoded from its parts for comparison.
  const expected = encodeToolCall(req.callId, req.tool, req.argsBytes, rc.deadlineMs);
  return Buffer.compare(rc.toolCall, expected) === 0;
}
