/**
 * `POST /billing/webhook`: Stripe's event deliveries. The body is read raw
 * (the signature covers its exact bytes) up to a size cap, the signature and
 * its age are checked with the SDK (`stripe.webhooks.constructEvent`), and
 * the event is applied once (see sync.ts). The answer is 2xx once the effects
 * are committed or the event is known to need nothing; 4xx for requests that
 * did not come from Stripe (Stripe does not retry those usefully); 5xx when
 * billing could not apply it now, so Stripe delivers it again later.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import Stripe from "stripe";
import { type HttpRoute, type Logger, type RouteDeclaration, sendJson, type Database } from "../../platform/index.js";
import { isEventRecorded, recordEvent } from "./store.js";
import { isStripeUnavailable } from "./stripe-client.js";
import type { SubscriptionSync } from "./sync.js";
import { subjectOfEvent } from "./webhook-events.js";

/** The webhook as the module declares it: public (Stripe has no token; the signature is the check), POST only. */
export const webhookRouteDeclaration: RouteDeclaration = { path: "/billing/webhook", methods: ["POST"], access: "public" };

/** What the webhook is built from; `sync` is absent while STRIPE_SECRET_KEY is unset. */
export interface WebhookDeps {
  readonly db: Database;
  readonly log: Logger;
  readonly webhookSecret: string;
  readonly toleranceS: number;
  readonly maxBytes: number;
  readonly sync: SubscriptionSync | undefined;
}

/** Reads the body up to `maxBytes`; beyond, drains (a little) and reports "too-large" so a 413 can be answered cleanly. */
function readCapped(req: IncomingMessage, maxBytes: number): Promise<Buffer | "too-large"> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) parts.push(chunk);
      else {
        parts.length = 0;
        // Draining lets the client read the 413; a body far past the cap is cut off instead.
        if (size > 4 * maxBytes) resolve("too-large");
      }
    });
    req.once("end", () => resolve(size > maxBytes ? "too-large" : Buffer.concat(parts)));
    req.once("error", reject);
  });
}

const refuse = (res: ServerResponse, status: number, error: string, headers: Record<string, string> = {}) => sendJson(res, status, { error }, headers);

/** The webhook route. */
export function createWebhookRoute(deps: WebhookDeps): HttpRoute {
  const { db, log } = deps;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > 4 * deps.maxBytes) {
      refuse(res, 413, `the body is over ${deps.maxBytes} bytes`, { connection: "close" });
      res.once("finish", () => req.destroy());
      return;
    }
    const body = await readCapped(req, deps.maxBytes);
    if (body === "too-large") return refuse(res, 413, `the body is over ${deps.maxBytes} bytes`, { connection: "close" });
    const signature = req.headers["stripe-signature"];
    if (typeof signature !== "string" || signature === "") return refuse(res, 400, "missing Stripe-Signature header: only Stripe's signed deliveries are accepted");
    if (deps.webhookSecret === "") return refuse(res, 503, "billing's webhook is not configured: set STRIPE_WEBHOOK_SECRET");

    let event: Stripe.Event;
    try {
      event = Stripe.webhooks.constructEvent(body, signature, deps.webhookSecret, deps.toleranceS);
    } catch (err) {
      if (!(err instanceof Stripe.errors.StripeSignatureVerificationError)) return refuse(res, 400, "the body is not a JSON Stripe event");
      // The SDK's message goes on with advice for integrators; its first sentence is the reason.
      const reason = /^[^.\n]*/.exec(err.message)![0];
      log.warn({ reason }, "webhook refused: bad signature");
      return refuse(res, 400, `signature verification failed: ${reason}`);
    }
    if (typeof event?.id !== "string" || typeof event.type !== "string" || typeof event.data?.object !== "object") {
      return refuse(res, 400, "the body is not a Stripe event");
    }
    if (await isEventRecorded(db.sql, event.id)) return sendJson(res, 200, { received: true, outcome: "duplicate" });

    const subject = subjectOfEvent(event);
    if (subject === undefined) {
      await recordEvent(db.sql, event.id, event.type, "ignored");
      return sendJson(res, 200, { received: true, outcome: "ignored" });
    }
    if (deps.sync === undefined) return refuse(res, 503, "billing is not configured: set STRIPE_SECRET_KEY");
    try {
      const r = await deps.sync.sync({ ...subject, event: { id: event.id, type: event.type } });
      const line = { eventId: event.id, type: event.type, outcome: r.outcome, userId: r.userId };
      if (r.outcome === "unknown-customer") log.warn({ ...line, customer: subject.customerId }, "webhook event for a customer billing does not know: nothing changed");
      else log.info(line, "webhook event");
      sendJson(res, 200, { received: true, outcome: r.outcome });
    } catch (err) {
      // Not applied: nothing was committed, and Stripe delivers the event again later.
      const unavailable = isStripeUnavailable(err) || (err as { code?: unknown }).code === 14;
      log.error({ eventId: event.id, type: event.type, err: (err as Error).message }, "webhook event not applied; Stripe will redeliver it");
      refuse(res, unavailable ? 503 : 500, "the event could not be applied now; deliver it again later");
    }
  }

  return { method: "POST", path: webhookRouteDeclaration.path, handle };
}
