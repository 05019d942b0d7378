/**
 * The spans of a tool call across instances (when tracing is on):
 *
 * ```
 * caller instance A                         holder instance B
 * SERVER  DeviceService/CallTool
 * └ PRODUCER  send <p>.tools        ──NATS headers (through the stream's RePublish)──▶
 *                                           CONSUMER  process <p>.deliver   (until the outcome is decided)
 *                                           └ CLIENT  device <tool>         (frame sent → tool_result back)
 *   CONSUMER  process <p>.results   ◀──NATS headers on the outcome──
 * ```
 *
 * Each carries the call id and, when it fails, the gRPC code. calls.ts and
 * hub.ts call these hooks; with tracing off each is one check and adds no
 * header.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { SpanKind, trace, ROOT_CONTEXT, type Span } from "@opentelemetry/api";
import { headers, type MsgHdrs } from "@nats-io/nats-core";
import { ToolCallSchema } from "../gen/switchyard/device/v1/device_frame_pb.js";
import { attr, contextFrom, endWithCode, injectSpan, startSpan, traceparentOfSpan, tracingEnabled } from "../platform/telemetry/tracing.js";
import type { Outcome, RelayedCall } from "./wire.js";

const CALL_ID = "switchyard.tool_call.id";
const TOOL = "switchyard.tool_call.tool";
const HOLDER = "switchyard.tool_call.holder_instance";

/** "sy.tools.<user>.<instance>" → "sy.tools": span names stay few whatever the users. */
function subjectFamily(subject: string): string {
  const first = subject.indexOf(".");
  const second = subject.indexOf(".", first + 1);
  return second < 0 ? subject : subject.slice(0, second);
}

/**
 * Publishes a tool call (`publish` is the synchronous NATS publish) inside a
 * PRODUCER span, child of the active span (the CallTool SERVER span), whose
 * context rides in `h` to the holder.
 */
export function tracedCallPublish(h: MsgHdrs, subject: string, callId: string, holder: string, publish: () => void): void {
  const span = startSpan(`send ${subjectFamily(subject)}`, SpanKind.PRODUCER, {
    [attr.messagingSystem]: "nats",
    [attr.destination]: subjectFamily(subject),
    [attr.operationType]: "send",
    [attr.messageId]: callId,
    [CALL_ID]: callId,
    [HOLDER]: holder,
  });
  if (span === undefined) return publish();
  injectSpan(span, (k, v) => h.set(k, v));
  try {
    publish();
    endWithCode(span, SpanKind.PRODUCER, 0);
  } catch (err) {
    endWithCode(span, SpanKind.PRODUCER, 14, String(err));
    throw err;
  }
}

/** The caller's record of an outcome arriving: a CONSUMER span (begun and ended at once), child of the holder's delivery span. */
export function traceOutcomeReceived(subject: string, msgHeaders: MsgHdrs | undefined, outcome: Outcome): void {
  if (!tracingEnabled()) return;
  const span = startSpan(
    `process ${subjectFamily(subject)}`,
    SpanKind.CONSUMER,
    { [attr.messagingSystem]: "nats", [attr.destination]: subjectFamily(subject), [attr.operationType]: "process", [CALL_ID]: outcome.callId },
    contextFrom((name) => msgHeaders?.get(name)),
  )!;
  endWithCode(span, SpanKind.CONSUMER, outcome.failure?.code ?? 0, outcome.failure?.message);
}

interface Delivery {
  readonly span: Span;
  device: Span | undefined;
}

/** Open delivery spans of the calls this holder has taken (weak: a call dropped unanswered leaves nothing behind). */
const deliveries = new WeakMap<RelayedCall, Delivery>();

/** The holder takes a call: its CONSUMER span begins, child of the caller's PRODUCER span (from the message headers). */
export function startDelivery(rc: RelayedCall, subject: string, msgHeaders: MsgHdrs | undefined): void {
  if (!tracingEnabled()) return;
  const span = startSpan(
    `process ${subjectFamily(subject)}`,
    SpanKind.CONSUMER,
    { [attr.messagingSystem]: "nats", [attr.destination]: subjectFamily(subject), [attr.operationType]: "process", [CALL_ID]: rc.callId, "switchyard.device.id": rc.deviceId },
    contextFrom((name) => msgHeaders?.get(name)),
  )!;
  deliveries.set(rc, { span, device: undefined });
}

/**
 * The call's frame goes to the device: a CLIENT span for the device's round
 * trip begins, child of the delivery span. Returns its `traceparent` for the
 * frame (undefined when the call is not traced), so a device may continue it.
 */
export function startDeviceRoundTrip(rc: RelayedCall): string | undefined {
  const d = deliveries.get(rc);
  if (d === undefined) return undefined;
  let tool = "";
  try {
    tool = fromBinary(ToolCallSchema, rc.toolCall).tool;
  } catch {
    /* named without the tool */
  }
  d.device = startSpan(`device ${tool || "tool_call"}`, SpanKind.CLIENT, { [CALL_ID]: rc.callId, [TOOL]: tool, "switchyard.device.id": rc.deviceId }, trace.setSpan(ROOT_CONTEXT, d.span));
  return d.device === undefined ? undefined : traceparentOfSpan(d.device.spanContext());
}

/**
 * The holder is done with a call (`code` 0: the device answered). Ends its
 * spans and returns headers carrying the delivery span's context for the
 * outcome message, or undefined when the call was not traced.
 */
export function endDelivery(rc: RelayedCall, code: number, message?: string): MsgHdrs | undefined {
  const d = deliveries.get(rc);
  if (d === undefined) return undefined;
  deliveries.delete(rc);
  if (d.device !== undefined) endWithCode(d.device, SpanKind.CLIENT, code, message);
  const h = headers();
  injectSpan(d.span, (k, v) => h.set(k, v));
  endWithCode(d.span, SpanKind.CONSUMER, code, message);
  return h;
}
