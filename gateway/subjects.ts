/**
 * Every NATS name the gateway uses, in one place. User ids become subject
 * tokens only through `userToken` (the platform's encodeSubjectToken: base64url
 * of the UTF-8 id), so no id can put `*`, `>`, `.` or whitespace in a subject
 * and widen a subscription, and two ids never share a token. Instance ids and
 * call ids are checked plain ids (subjectToken) before use.
 */
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
  /** Stream/republish pairs, for stream setup. */
  readonly prefix: string;
}

/** Names under prefix `p` (GATEWAY_NATS_PREFIX). */
export function gatewayNames(p: string): GatewayNames {
  const P = p.toUpperCase();
  return {
    prefix: p,
    callStream: `${P}_TOOLCALLS`,
    resultStream: `${P}_TOOLRESULTS`,
    notifyStream: `${P}_NOTIFY`,
    devicesBucket: `${p}_devices`,
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
  };
}
