/**
 * NotificationService: Publish (services only), Subscribe (a server stream
 * with replay, heartbeats and gap-free live delivery) and List (newest first).
 */
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { NotificationService, type SubscribeResponse } from "../gen/switchyard/notify/v1/notify_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SubscribeResponseSchema } from "../gen/switchyard/notify/v1/notify_pb.js";
import { register, type ServiceRegistration } from "../platform/index.js";
import { isService, principalOf } from "./auth.js";
import type { Notifications } from "./notifications.js";
import { userToken } from "./subjects.js";

const heartbeatEveryMs = 15_000;

type Item = MessageInitShape<typeof SubscribeResponseSchema> | ConnectError;

/** Notifications a Subscribe stream may have waiting before it is ended as too slow. */
export const maxQueuedPerSubscriber = 1000;

/**
 * The queue between the fan-out and one Subscribe stream. Delivery never
 * blocks the fan-out; a subscriber that stops reading is not allowed to grow
 * it without end: past `limit` items the queue is dropped and the stream ends
 * UNAVAILABLE, and the client resubscribes from its last sequence, losing
 * nothing (the stream keeps every notification for the retention window).
 */
export function createSubscriberQueue(limit = maxQueuedPerSubscriber) {
  const items: Item[] = [];
  let wake: (() => void) | undefined;
  let overflowed = false;
  return {
    push(i: Item) {
      if (overflowed) return;
      if (items.length >= limit) {
        overflowed = true;
        items.length = 0;
        items.push(
          new ConnectError(
            `this subscriber fell ${limit} notifications behind: resubscribe with after_sequence set to the last sequence received`,
            Code.Unavailable,
          ),
        );
      } else {
        items.push(i);
      }
      wake?.();
    },
    /** The next item, or undefined after `ms` or when `signal` aborts. */
    async next(ms: number, signal: AbortSignal): Promise<Item | undefined> {
      if (items.length === 0 && !signal.aborted) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, ms);
          function done() {
            clearTimeout(t);
            signal.removeEventListener("abort", done);
            wake = undefined;
            resolve();
          }
          wake = done;
          signal.addEventListener("abort", done, { once: true });
        });
      }
      return items.shift();
    },
  };
}

function pageToken(userId: string, from: bigint): string {
  return Buffer.from(JSON.stringify({ u: userToken(userId), s: from.toString() })).toString("base64url");
}

function readPageToken(token: string, userId: string): bigint {
  if (token === "") return 0n;
  try {
    const v = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { u?: unknown; s?: unknown };
    if (v.u === userToken(userId) && typeof v.s === "string" && /^[1-9]\d{0,18}$/.test(v.s)) return BigInt(v.s);
  } catch {
    /* fall through */
  }
  throw new ConnectError("page_token: is malformed or came from a List with other parameters", Code.InvalidArgument);
}

/** The NotificationService registration. */
export function notificationService(n: Notifications): ServiceRegistration {
  return register(NotificationService, {
    async publish(req, ctx) {
      if (!isService(principalOf(ctx))) throw new ConnectError("only services may publish notifications", Code.PermissionDenied);
      const notification = await n.publish({ userId: req.userId, title: req.title, body: req.body, kind: req.kind, data: req.data, idempotencyKey: req.idempotencyKey });
      return { notification };
    },

    async *subscribe(req, ctx) {
      const p = principalOf(ctx);
      const queue = createSubscriberQueue();
      const attachment = await n.attach(p.userId, {
        after: req.afterSequence,
        strict: true,
        deliver: (notification) => queue.push({ event: { case: "notification", value: notification } }),
        fail: (err) => queue.push(err),
      });
      const heartbeat = (): SubscribeResponse | MessageInitShape<typeof SubscribeResponseSchema> => ({
        event: { case: "heartbeat", value: { latestSequence: attachment.last, sendTime: timestampNow() } },
      });
      try {
        await attachment.start();
        queue.push(heartbeat());
        for (;;) {
          if (Date.now() >= p.expiresAt) throw new ConnectError("the access token expired: resubscribe with a fresh one", Code.Unauthenticated);
          const wait = Math.min(heartbeatEveryMs, Math.max(0, p.expiresAt - Date.now()));
          const item = await queue.next(wait, ctx.signal);
          if (ctx.signal.aborted) return;
          if (item instanceof ConnectError) throw item;
          if (item !== undefined) yield item;
          else if (Date.now() < p.expiresAt) yield heartbeat();
        }
      } finally {
        attachment.detach();
      }
    },

    async list(req, ctx) {
      const p = principalOf(ctx);
      const from = readPageToken(req.pageToken, p.userId);
      const size = req.pageSize === 0 ? 50 : req.pageSize;
      const { items, next } = await n.list(p.userId, size, from);
      return { notifications: items, nextPageToken: next === 0n ? "" : pageToken(p.userId, next) };
    },
  });
}
