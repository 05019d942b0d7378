/**
 * A small local server speaking Stripe's wire format, for the official
 * `stripe` SDK pointed at it (STRIPE_API_BASE) in tests, benches and local
 * development. stripe-mock (Stripe's own) is a Go binary and stateless; this
 * one keeps state, so a checkout can be paid and a subscription changed:
 *
 * - requests are form-encoded (`metadata[user_id]=…`, `line_items[0][price]=…`)
 *   with `Authorization: Bearer <secret key>`; answers are JSON objects with
 *   `id` and `object`; errors are Stripe's `{error: {type, code, message, param}}`
 *   with its HTTP statuses (400, 401, 404);
 * - `Idempotency-Key` on a POST replays the first answer (header
 *   `Idempotent-Replayed: true`) and refuses the key with other parameters;
 * - customers, checkout sessions (subscription mode), subscriptions
 *   (retrieve; update: cancel_at_period_end, an item's price, metadata; cancel);
 * - a hosted checkout page (`GET /checkout/<session id>`, a Pay button) that
 *   creates the subscription and redirects to the session's success_url;
 * - events, signed as Stripe signs them (`stripe.webhooks.generateTestHeaderString`)
 *   and POSTed to `webhookUrl` when one is set; tests may also deliver any
 *   event again, late, or with a forged or old signature.
 */
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import Stripe from "stripe";

/** A Stripe API object as JSON. */
export type StripeObject = Record<string, unknown> & { id: string; object: string };

/** A Stripe event as delivered to webhooks. */
export interface StripeEvent extends StripeObject {
  object: "event";
  type: string;
  created: number;
  data: { object: StripeObject; previous_attributes?: Record<string, unknown> };
}

/** What a webhook delivery got back. */
export interface Delivery {
  readonly status: number;
  readonly body: string;
}

/** Options of one delivery. */
export interface DeliverOptions {
  /** Where to POST (default: the server's webhookUrl). */
  readonly url?: string;
  /** Signature timestamp in seconds (default now). */
  readonly timestamp?: number;
  /** Sign with this secret instead of the endpoint's. */
  readonly secret?: string;
  /** Send this Stripe-Signature header as is (null: none). */
  readonly signatureHeader?: string | null;
  /** Send this body instead of the event's JSON (still signed unless signatureHeader is given). */
  readonly rawBody?: string | Buffer;
}

/** Options of `startStripeServer`. */
export interface StripeServerOptions {
  /** The API key clients must present (default sk_test_local). */
  readonly secretKey?: string;
  /** The webhook endpoint's signing secret (default a random whsec_...). */
  readonly webhookSecret?: string;
  /** Price ids the account knows (default price_pro, price_power, price_team). */
  readonly prices?: readonly string[];
  /** Where events are POSTed as they happen; unset: events are only recorded. */
  webhookUrl?: string;
}

/** A running local Stripe. */
export interface StripeServer {
  readonly url: string;
  readonly port: number;
  readonly secretKey: string;
  readonly webhookSecret: string;
  /** Where events are POSTed as they happen (settable); unset: only recorded. */
  webhookUrl: string | undefined;
  /** Every event so far, oldest first. */
  readonly events: StripeEvent[];
  /** Every request the API answered (method, path, idempotency key), oldest first. */
  readonly requests: { method: string; path: string; idempotencyKey?: string; replayed: boolean }[];
  readonly customers: Map<string, StripeObject>;
  readonly sessions: Map<string, StripeObject>;
  readonly subscriptions: Map<string, StripeObject>;
  /** Pays an open checkout session: creates its subscription (active) and its events; returns them. */
  completeCheckout(sessionId: string): Promise<StripeEvent[]>;
  /** Changes a subscription as Stripe would (price, status, cancel flags) and emits customer.subscription.updated (or .deleted). */
  changeSubscription(id: string, change: { price?: string; status?: string; cancelAtPeriodEnd?: boolean; cancellationReason?: string }): Promise<StripeEvent[]>;
  /** A renewal payment failed: the subscription goes past_due; emits invoice.payment_failed and customer.subscription.updated. */
  failPayment(subscriptionId: string): Promise<StripeEvent[]>;
  /** Signs and POSTs an event (again, late, forged: see DeliverOptions). */
  deliver(event: StripeEvent, options?: DeliverOptions): Promise<Delivery>;
  /** Builds and records an event without changing state (e.g. for an unknown customer). */
  makeEvent(type: string, object: StripeObject, previous?: Record<string, unknown>): StripeEvent;
  close(): Promise<void>;
}

const nowS = () => Math.floor(Date.now() / 1000);
const newId = (prefix: string) => `${prefix}_${randomBytes(12).toString("base64url").replace(/[-_]/g, "x")}`;
const MONTH_S = 30 * 24 * 3600;

/** Stripe's error body and status. */
class StripeApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly code?: string,
    readonly param?: string,
  ) {
    super(message);
  }
  body() {
    return { error: { type: this.type, message: this.message, ...(this.code ? { code: this.code } : {}), ...(this.param ? { param: this.param } : {}) } };
  }
}

const missing = (what: string, id: string, param = "id") => new StripeApiError(404, "invalid_request_error", `No such ${what}: '${id}'`, "resource_missing", param);
const badParam = (param: string, message: string) => new StripeApiError(400, "invalid_request_error", message, "parameter_invalid", param);

/**
 * Decodes Stripe's form encoding into nested objects: `a[b]=1` is {a: {b: "1"}},
 * `a[0][c]=2` is {a: [{c: "2"}]}, `expand[]=x` is {expand: ["x"]}.
 */
export function decodeForm(body: string): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [rawKey, value] of new URLSearchParams(body)) {
    const path = rawKey.replace(/\]/g, "").split("[");
    let node: Record<string, unknown> | unknown[] = root;
    path.forEach((key, i) => {
      const last = i === path.length - 1;
      const nextIsIndex = !last && /^\d*$/.test(path[i + 1]!);
      const k = Array.isArray(node) && key === "" ? node.length : key;
      const bag = node as Record<string | number, unknown>;
      if (last) bag[k] = value;
      else bag[k] ??= nextIsIndex ? [] : {};
      if (!last) node = bag[k] as Record<string, unknown> | unknown[];
    });
  }
  return root;
}

/** Starts the server on a free loopback port. */
export async function startStripeServer(options: StripeServerOptions = {}): Promise<StripeServer> {
  const secretKey = options.secretKey ?? "sk_test_local";
  const webhookSecret = options.webhookSecret ?? `whsec_${randomBytes(24).toString("base64url")}`;
  const prices = new Set(options.prices ?? ["price_pro", "price_power", "price_team"]);
  const customers = new Map<string, StripeObject>();
  const sessions = new Map<string, StripeObject>();
  const subscriptions = new Map<string, StripeObject>();
  const events: StripeEvent[] = [];
  const requests: StripeServer["requests"] = [];
  const idempotent = new Map<string, { fingerprint: string; status: number; body: string }>();
  const signer = Stripe.webhooks;

  function makeEvent(type: string, object: StripeObject, previous?: Record<string, unknown>): StripeEvent {
    const event: StripeEvent = {
      id: newId("evt"),
      object: "event",
      api_version: "2026-10-28.endive",
      created: nowS(),
      livemode: false,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      type,
      data: { object: structuredClone(object), ...(previous ? { previous_attributes: previous } : {}) },
    };
    events.push(event);
    return event;
  }

  async function deliver(event: StripeEvent, o: DeliverOptions = {}): Promise<Delivery> {
    const target = o.url ?? server.webhookUrl;
    if (!target) throw new Error("no webhook URL to deliver to");
    const payload = o.rawBody ?? JSON.stringify(event, null, 2);
    const headers: Record<string, string> = { "content-type": "application/json; charset=utf-8", "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)" };
    const signature =
      o.signatureHeader !== undefined
        ? o.signatureHeader
        : signer.generateTestHeaderString({ payload: payload.toString(), secret: o.secret ?? webhookSecret, timestamp: o.timestamp ?? nowS() });
    if (signature !== null) headers["stripe-signature"] = signature;
    const res = await fetch(target, { method: "POST", headers, body: typeof payload === "string" ? payload : new Uint8Array(payload) });
    return { status: res.status, body: await res.text() };
  }

  /** Records events and, with a webhook URL, delivers them in order. */
  async function emit(list: StripeEvent[]): Promise<StripeEvent[]> {
    if (server.webhookUrl) for (const e of list) await deliver(e);
    return list;
  }

  function subscriptionObject(customer: string, price: string, metadata: Record<string, string>): StripeObject {
    const start = nowS();
    const id = newId("sub");
    return {
      id,
      object: "subscription",
      customer,
      status: "active",
      cancel_at_period_end: false,
      cancel_at: null,
      canceled_at: null,
      cancellation_details: { reason: null, comment: null, feedback: null },
      created: start,
      start_date: start,
      ended_at: null,
      livemode: false,
      metadata,
      items: {
        object: "list",
        data: [
          {
            id: newId("si"),
            object: "subscription_item",
            price: { id: price, object: "price", recurring: { interval: "month", interval_count: 1 }, currency: "usd" },
            quantity: 1,
            subscription: id,
            current_period_start: start,
            current_period_end: start + MONTH_S,
          },
        ],
        has_more: false,
        url: `/v1/subscription_items?subscription=${id}`,
      },
      latest_invoice: null,
    };
  }

  function invoiceObject(sub: StripeObject, paid: boolean): StripeObject {
    return {
      id: newId("in"),
      object: "invoice",
      customer: sub.customer,
      status: paid ? "paid" : "open",
      amount_due: 1000,
      amount_paid: paid ? 1000 : 0,
      currency: "usd",
      created: nowS(),
      parent: { type: "subscription_details", quote_details: null, subscription_details: { subscription: sub.id, metadata: sub.metadata } },
    };
  }

  function periodEnd(sub: StripeObject): number {
    return ((sub.items as { data: { current_period_end: number }[] }).data[0]!.current_period_end);
  }

  const api = {
    createCustomer(params: Record<string, unknown>): StripeObject {
      const c: StripeObject = { id: newId("cus"), object: "customer", created: nowS(), email: params.email ?? null, name: params.name ?? null, metadata: params.metadata ?? {}, livemode: false };
      customers.set(c.id, c);
      return c;
    },
    createSession(params: Record<string, unknown>): StripeObject {
      if (params.mode !== "subscription" && params.mode !== "payment" && params.mode !== "setup") throw badParam("mode", "Invalid mode: must be one of payment, setup, or subscription");
      const items = params.line_items as { price?: string; quantity?: string }[] | undefined;
      if (!Array.isArray(items) || items.length === 0) throw badParam("line_items", "You must specify `line_items` in `subscription` mode.");
      items.forEach((item, i) => {
        if (!item.price || !prices.has(item.price)) throw missing("price", String(item.price), `line_items[${i}][price]`);
      });
      for (const p of ["success_url", "cancel_url"]) {
        if (params[p] !== undefined && !/^https?:\/\//.test(String(params[p]))) throw badParam(p, `Not a valid URL`);
      }
      if (typeof params.customer === "string" && !customers.has(params.customer)) throw missing("customer", params.customer, "customer");
      const id = newId("cs_test");
      const s: StripeObject = {
        id,
        object: "checkout.session",
        mode: params.mode,
        status: "open",
        payment_status: "unpaid",
        customer: params.customer ?? null,
        client_reference_id: params.client_reference_id ?? null,
        metadata: params.metadata ?? {},
        subscription: null,
        success_url: params.success_url ?? null,
        cancel_url: params.cancel_url ?? null,
        url: `${server.url}/checkout/${id}`,
        created: nowS(),
        expires_at: nowS() + 24 * 3600,
        livemode: false,
        // Kept for payment: what the subscription will be made of.
        line_items_for_test: items,
        subscription_data_for_test: params.subscription_data ?? {},
      };
      sessions.set(id, s);
      return s;
    },
    updateSubscription(id: string, params: Record<string, unknown>): { sub: StripeObject; events: StripeEvent[] } {
      const sub = subscriptions.get(id);
      if (!sub) throw missing("subscription", id);
      if (sub.status === "canceled") throw new StripeApiError(400, "invalid_request_error", "A canceled subscription can only update its cancellation_details and metadata.", "resource_missing");
      const previous: Record<string, unknown> = {};
      if (params.cancel_at_period_end !== undefined) {
        const flag = params.cancel_at_period_end === "true";
        if (flag !== sub.cancel_at_period_end) {
          previous.cancel_at_period_end = sub.cancel_at_period_end;
          previous.cancel_at = sub.cancel_at;
          sub.cancel_at_period_end = flag;
          sub.cancel_at = flag ? periodEnd(sub) : null;
          sub.canceled_at = flag ? nowS() : null;
        }
      }
      if (Array.isArray(params.items)) {
        const data = (sub.items as { data: Record<string, unknown>[] }).data;
        const before = structuredClone(sub.items);
        for (const change of params.items as { id?: string; price?: string }[]) {
          const item = data.find((i) => i.id === change.id);
          if (!item) throw missing("subscription_item", change.id ?? "");
          if (change.price === undefined) continue;
          if (!prices.has(change.price)) throw missing("price", change.price);
          if ((item.price as { id: string }).id !== change.price) {
            previous.items = before;
            item.price = { ...(item.price as object), id: change.price };
          }
        }
      }
      if (params.metadata) sub.metadata = { ...(sub.metadata as object), ...(params.metadata as object) };
      const changed = Object.keys(previous).length > 0;
      return { sub, events: changed ? [makeEvent("customer.subscription.updated", sub, previous)] : [] };
    },
    cancelSubscription(id: string): { sub: StripeObject; events: StripeEvent[] } {
      const sub = subscriptions.get(id);
      if (!sub) throw missing("subscription", id);
      if (sub.status === "canceled") throw new StripeApiError(400, "invalid_request_error", `This subscription has already been canceled: '${id}'`, "subscription_canceled");
      sub.status = "canceled";
      sub.canceled_at = nowS();
      sub.ended_at = nowS();
      sub.cancellation_details = { reason: "cancellation_requested", comment: null, feedback: null };
      return { sub, events: [makeEvent("customer.subscription.deleted", sub)] };
    },
  };

  /** Answers one API request: returns [status, body] and the events it caused. */
  async function route(method: string, path: string, params: Record<string, unknown>): Promise<{ status: number; body: unknown; events: StripeEvent[] }> {
    const ok = (body: unknown, evs: StripeEvent[] = []) => ({ status: 200, body, events: evs });
    let m: RegExpExecArray | null;
    if (method === "POST" && path === "/v1/customers") return ok(api.createCustomer(params));
    if (method === "GET" && (m = /^\/v1\/customers\/([^/]+)$/.exec(path))) {
      const c = customers.get(m[1]!);
      if (!c) throw missing("customer", m[1]!);
      return ok(c);
    }
    if (method === "POST" && path === "/v1/checkout/sessions") return ok(publicSession(api.createSession(params)));
    if (method === "GET" && (m = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(path))) {
      const s = sessions.get(m[1]!);
      if (!s) throw missing("checkout.session", m[1]!);
      return ok(publicSession(s));
    }
    if (method === "GET" && (m = /^\/v1\/subscriptions\/([^/]+)$/.exec(path))) {
      const s = subscriptions.get(m[1]!);
      if (!s) throw missing("subscription", m[1]!);
      return ok(s);
    }
    if (method === "POST" && (m = /^\/v1\/subscriptions\/([^/]+)$/.exec(path))) {
      const r = api.updateSubscription(m[1]!, params);
      return ok(r.sub, r.events);
    }
    if (method === "DELETE" && (m = /^\/v1\/subscriptions\/([^/]+)$/.exec(path))) {
      const r = api.cancelSubscription(m[1]!);
      return ok(r.sub, r.events);
    }
    throw new StripeApiError(404, "invalid_request_error", `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`);
  }

  async function handleApi(req: http.IncomingMessage, res: http.ServerResponse, body: string): Promise<void> {
    const [path, query] = (req.url ?? "/").split("?", 2) as [string, string | undefined];
    const method = req.method ?? "GET";
    const send = (status: number, json: unknown, extra: Record<string, string> = {}) => {
      const text = typeof json === "string" ? json : JSON.stringify(json);
      res.writeHead(status, { "content-type": "application/json", "request-id": newId("req"), "stripe-version": "2026-10-28.endive", ...extra });
      res.end(text);
    };
    if (req.headers.authorization !== `Bearer ${secretKey}`) {
      const given = (req.headers.authorization ?? "").replace(/^Bearer /, "");
      return send(401, { error: { type: "invalid_request_error", message: given ? `Invalid API Key provided: ${given.slice(0, 8)}****` : "You did not provide an API key." } });
    }
    const key = method === "POST" ? (req.headers["idempotency-key"] as string | undefined) : undefined;
    const fingerprint = createHash("sha256").update(`${method} ${path} ${body}`).digest("hex");
    if (key !== undefined) {
      const seen = idempotent.get(key);
      if (seen) {
        requests.push({ method, path, idempotencyKey: key, replayed: true });
        if (seen.fingerprint !== fingerprint) {
          return send(400, { error: { type: "idempotency_error", message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.` } });
        }
        return send(seen.status, seen.body, { "idempotent-replayed": "true", "idempotency-key": key });
      }
    }
    requests.push({ method, path, idempotencyKey: key, replayed: false });
    const params = decodeForm(method === "GET" || method === "DELETE" ? (query ?? body) : body);
    let status: number;
    let json: string;
    let caused: StripeEvent[] = [];
    try {
      const r = await route(method, path, params);
      status = r.status;
      json = JSON.stringify(r.body);
      caused = r.events;
    } catch (err) {
      if (!(err instanceof StripeApiError)) throw err;
      status = err.status;
      json = JSON.stringify(err.body());
    }
    // Stripe keeps the first answer to a key, errors included (except 5xx).
    if (key !== undefined) idempotent.set(key, { fingerprint, status, body: json });
    send(status, json, key ? { "idempotency-key": key } : {});
    if (caused.length > 0) void emit(caused).catch(() => undefined);
  }

  function publicSession(s: StripeObject): StripeObject {
    const { line_items_for_test: _a, subscription_data_for_test: _b, ...rest } = s;
    return rest as StripeObject;
  }

  async function completeCheckout(sessionId: string): Promise<StripeEvent[]> {
    const s = sessions.get(sessionId);
    if (!s) throw new Error(`no checkout session ${sessionId}`);
    if (s.status !== "open") throw new Error(`checkout session ${sessionId} is ${String(s.status)}`);
    let customer = s.customer as string | null;
    if (!customer) customer = api.createCustomer({}).id;
    const items = s.line_items_for_test as { price: string }[];
    const metadata = ((s.subscription_data_for_test as { metadata?: Record<string, string> }).metadata ?? {}) as Record<string, string>;
    const sub = subscriptionObject(customer, items[0]!.price, metadata);
    const invoice = invoiceObject(sub, true);
    sub.latest_invoice = invoice.id;
    subscriptions.set(sub.id, sub);
    Object.assign(s, { status: "complete", payment_status: "paid", customer, subscription: sub.id });
    return emit([makeEvent("customer.subscription.created", sub), makeEvent("invoice.paid", invoice), makeEvent("checkout.session.completed", publicSession(s))]);
  }

  async function changeSubscription(id: string, change: { price?: string; status?: string; cancelAtPeriodEnd?: boolean; cancellationReason?: string }): Promise<StripeEvent[]> {
    const sub = subscriptions.get(id);
    if (!sub) throw new Error(`no subscription ${id}`);
    const previous: Record<string, unknown> = {};
    const item = (sub.items as { data: Record<string, unknown>[] }).data[0]!;
    if (change.price !== undefined) {
      if (!prices.has(change.price)) throw new Error(`unknown price ${change.price}`);
      previous.items = structuredClone(sub.items);
      item.price = { ...(item.price as object), id: change.price };
    }
    if (change.cancelAtPeriodEnd !== undefined) {
      previous.cancel_at_period_end = sub.cancel_at_period_end;
      sub.cancel_at_period_end = change.cancelAtPeriodEnd;
      sub.cancel_at = change.cancelAtPeriodEnd ? periodEnd(sub) : null;
    }
    if (change.status !== undefined) {
      previous.status = sub.status;
      sub.status = change.status;
      if (change.status === "canceled") {
        sub.ended_at = nowS();
        sub.canceled_at ??= nowS();
        sub.cancellation_details = { reason: change.cancellationReason ?? "cancellation_requested", comment: null, feedback: null };
      }
    }
    const type = sub.status === "canceled" ? "customer.subscription.deleted" : "customer.subscription.updated";
    return emit([makeEvent(type, sub, type === "customer.subscription.updated" ? previous : undefined)]);
  }

  async function failPayment(subscriptionId: string): Promise<StripeEvent[]> {
    const sub = subscriptions.get(subscriptionId);
    if (!sub) throw new Error(`no subscription ${subscriptionId}`);
    const previous = { status: sub.status };
    sub.status = "past_due";
    const invoice = invoiceObject(sub, false);
    sub.latest_invoice = invoice.id;
    return emit([makeEvent("invoice.payment_failed", invoice), makeEvent("customer.subscription.updated", sub, previous)]);
  }

  /** The hosted checkout page and its Pay button (what a browser sees at session.url). */
  async function handleCheckoutPage(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const m = /^\/checkout\/([A-Za-z0-9_]+)(\/pay)?$/.exec((req.url ?? "").split("?", 1)[0]!);
    const s = m ? sessions.get(m[1]!) : undefined;
    if (!s) {
      res.writeHead(404, { "content-type": "text/plain" });
      return void res.end("no such checkout session");
    }
    if (m![2] && req.method === "POST") {
      if (s.status === "open") await completeCheckout(s.id);
      res.writeHead(303, { location: String(s.success_url).replace("{CHECKOUT_SESSION_ID}", s.id) });
      return void res.end();
    }
    const price = (s.line_items_for_test as { price: string }[])[0]!.price;
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(
      `<!doctype html><html><head><meta charset="utf-8"><title>Local Stripe checkout</title></head><body>` +
        `<h1>Local Stripe checkout</h1><p>Subscribe to <span id="price">${price}</span> (test mode).</p>` +
        `<form method="post" action="/checkout/${s.id}/pay"><button id="pay" type="submit">Pay</button></form>` +
        `<p><a id="cancel" href="${String(s.cancel_url)}">Back</a></p></body></html>`,
    );
  }

  const httpServer = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const work = (req.url ?? "").startsWith("/checkout/") ? handleCheckoutPage(req, res) : handleApi(req, res, body);
      work.catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { type: "api_error", message: String(err) } }));
      });
    });
  });
  await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", r));
  const port = (httpServer.address() as AddressInfo).port;

  const server: StripeServer = {
    url: `http://127.0.0.1:${port}`,
    port,
    secretKey,
    webhookSecret,
    webhookUrl: options.webhookUrl,
    events,
    requests,
    customers,
    sessions,
    subscriptions,
    completeCheckout,
    changeSubscription,
    failPayment,
    deliver,
    makeEvent,
    close: () =>
      new Promise<void>((r) => {
        httpServer.closeAllConnections();
        httpServer.close(() => r());
      }),
  };
  return server;
}

/** The environment a billing process needs to use `server` (prices per tier as the server knows them). */
export function stripeEnv(server: StripeServer): Record<string, string> {
  return {
    STRIPE_SECRET_KEY: server.secretKey,
    STRIPE_WEBHOOK_SECRET: server.webhookSecret,
    STRIPE_API_BASE: server.url,
    STRIPE_PRICE_PRO: "price_pro",
    STRIPE_PRICE_POWER: "price_power",
    STRIPE_PRICE_TEAM: "price_team",
  };
}
