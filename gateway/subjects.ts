/**
 * Every NATS name the gateway uses, in one place. User ids become subject
 * tokens only through `userToken` (the platform's encodeSubjectToken: base64url
 * of the UTF-8 id), so no id can put `*`, `>`, `.` or whitespace in a subject
 * and widen a subscription, and two ids never share a token. Instance ids and
 * call ids are checked plain ids (subjectToken) before use.
 */
import { kvSubjects } from "../platform/nats/declare.js";
import { encodeSubjectToken, subjectToken } from "../platform/index.js";

/** The subject token of a user id; throws INVALID_ARGUMENT on an empty id. */
export function userToken(userId: string): string {
  return encodeSubjectToken(userId, "user id");
}

const safe = (s: string, what: string) => subjectToken(s, what);

/** The names of one deployment's streams, buckets and subjects (prefix `p`). */
export interface GatewayNames {
  readonly callStream: string;
  readonly resultStream: string;
  readonly notifyStream: string;
  readonly devicesBucket: string;
  readonly gatewaysBucket: string;
  readonly ticketsBucket: string;
  /** Stream subject of a call for `user` held by `instance`. */
  call(user: string, instance: string): string;
  /** Core subject an instance receives its calls on (RePublish of the call stream). */
  deliverAll(instance: string): string;
  /** Stream subject of a call's one outcome. */
  result(callId: string, replyInstance: string): string;
  /** Core subject (RePublish of the result stream) of one call's outcome. */
  resultDelivered(callId: string, replyInstance: string): string;
  /** Core subject an instance receives all its calls' outcomes on. */
  resultsOf(instance: string): string;
  /** Reply subject of the JetStream ack of a call's publication. */
  ack(instance: string, callId: string): string;
  /** Core subject an instance receives all its publication acks on. */
  acksOf(instance: string): string;
  /** Stream subject of a user's notifications. */
  notify(user: string): string;
  /** Core subject (RePublish) of a user's stored notifications. */
  notified(user: string): string;
  /** Core subject (RePublish of the devices bucket) of a user's presence. */
  presence(user: string): string;
  /** Core subject (RePublish of the gateways bucket) of every instance's beats. */
  readonly beats: string;
  /** Core subject of commands to one instance. */
  control(instance: string): string;
  /** Core subject of CancelToolCall requests, heard by every instance (the one holding the call acts). */
  readonly callCancel: string;
  /** The first token of every subject above (GATEWAY_NATS_PREFIX). */
  readonly prefix: string;
  /** What the streams and buckets capture and re-publish, for their declaration (nats-setup.ts). */
  readonly stored: StoredSubjects;
}

/** A stream's RePublish: stored messages on `src` are copied onto core subject `dest`. */
export interface Republish {
  readonly src: string;
  readonly dest: string;
}

/** The subjects the gateway's streams and buckets capture, and where they re-publish. */
export interface StoredSubjects {
  /** Captured by the call stream: every `call(user, instance)`. */
  readonly calls: string;
  /** Call stream to `deliverAll(instance)`. */
  readonly callsRepublish: Republish;
  /** Captured by the result stream: every `result(callId, instance)`. */
  readonly results: string;
  /** Captured by the notification stream: every `notify(user)`. */
  readonly notifications: string;
  /** Notification stream to `notified(user)`. */
  readonly notificationsRepublish: Republish;
  /** Devices bucket to `presence(user)`. */
  readonly presenceRepublish: Republish;
  /** Gateways bucket to `beats`. */
  readonly beatsRepublish: Republish;
}

/** Names under prefix `p` (GATEWAY_NATS_PREFIX). */
export function gatewayNames(p: string): GatewayNames {
  const P = p.toUpperCase();
  return {
    prefix: p,
    callStream: `${P}_TOOLCALLS`,
    resultStream: `${P}_TOOLRESULTS`,
    notifyStream: `${P}_NOTIFY`,
    devicesBucket: `${p}_devices`, // also in `stored` below
    gatewaysBucket: `${p}_gateways`,
    ticketsBucket: `${p}_tickets`,
    call: (user, instance) => `${p}.tools.${userToken(user)}.${safe(instance, "instance id")}`,
    deliverAll: (instance) => `${p}.deliver.*.${safe(instance, "instance id")}`,
    result: (callId, inst) => `${p}.toolres.${safe(callId, "call id")}.${safe(inst, "instance id")}`,
    resultDelivered: (callId, inst) => `${p}.results.${safe(callId, "call id")}.${safe(inst, "instance id")}`,
    resultsOf: (instance) => `${p}.results.*.${safe(instance, "instance id")}`,
    ack: (instance, callId) => `${p}.ack.${safe(instance, "instance id")}.${safe(callId, "call id")}`,
    acksOf: (instance) => `${p}.ack.${safe(instance, "instance id")}.*`,
    notify: (user) => `${p}.notify.${userToken(user)}`,
    notified: (user) => `${p}.notified.${userToken(user)}`,
    presence: (user) => `${p}.presence.${userToken(user)}`,
    beats: `${p}.beat.*`,
    control: (instance) => `${p}.gwctl.${safe(instance, "instance id")}`,
    callCancel: `${p}.callcancel`,
    stored: {
      calls: `${p}.tools.*.*`,
      callsRepublish: { src: `${p}.tools.>`, dest: `${p}.deliver.>` },
      results: `${p}.toolres.*.*`,
      notifications: `${p}.notify.*`,
      notificationsRepublish: { src: `${p}.notify.>`, dest: `${p}.notified.>` },
      presenceRepublish: { src: kvSubjects(`${p}_devices`), dest: `${p}.presence.>` },
      beatsRepublish: { src: kvSubjects(`${p}_gateways`), dest: `${p}.beat.>` },
    },
  };
}
