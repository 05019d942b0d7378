/**
 * The console's subscription panel: the signed-in user's tier and
 * subscription (GetSubscription), an upgrade button that opens the payment
 * provider's checkout in a new tab (the console keeps its in-memory session
 * in this one) and follows the subscription until the payment lands, a
 * tier change in place for a paying user (ChangeTier), and cancellation at
 * the end of the period. It shows itself while someone is
 * signed in (the header's #signed-in), so main.ts only mounts it.
 */
import { SubscriptionStatus, type Subscription } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { describeError, type Session } from "./api.js";

/** How often the panel re-reads the subscription while a checkout is open, and for how long. */
const FOLLOW_EVERY_MS = 5_000;
const FOLLOW_FOR_MS = 15 * 60_000;

const word = (name: string | undefined, prefix: string) => name?.replace(prefix, "").toLowerCase().replace(/_/g, " ") ?? "";

function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from index.html`);
  return el as T;
}

const isPaid = (sub: Subscription) => [SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE].includes(sub.status);

/** Mounts the panel (section #billing-panel of index.html) over `session`. */
export function mountBilling(session: Session): void {
  const panel = element("billing-panel");
  const details = element("billing");
  const message = element("billing-message");
  const choice = element<HTMLSelectElement>("billing-tier-choice");
  const upgrade = element<HTMLButtonElement>("billing-upgrade");
  const cancel = element<HTMLButtonElement>("billing-cancel");
  let current: Subscription | undefined;
  let following: ReturnType<typeof setInterval> | undefined;

  const say = (text: string, error = false) => {
    message.textContent = text;
    message.classList.toggle("error", error);
  };

  function render(sub: Subscription) {
    current = sub;
    const paid = isPaid(sub);
    const end = sub.currentPeriodEnd ? new Date(Number(sub.currentPeriodEnd.seconds) * 1000).toLocaleDateString() : "";
    const rows: [string, string][] = [
      ["tier", word(Tier[sub.tier], "TIER_")],
      ["status", word(SubscriptionStatus[sub.status], "SUBSCRIPTION_STATUS_")],
    ];
    if (paid && end) rows.push([sub.cancelAtPeriodEnd ? "ends" : "renews", end]);
    details.replaceChildren(
      ...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt");
        dt.textContent = k[0]!.toUpperCase() + k.slice(1);
        const dd = document.createElement("dd");
        dd.textContent = v;
        dd.dataset.field = `billing-${k}`;
        return [dt, dd];
      }),
    );
    cancel.hidden = !paid || sub.cancelAtPeriodEnd;
    upgrade.textContent = paid ? "Change tier" : "Upgrade";
    const options = Array.from(choice.options);
    for (const option of options) option.disabled = paid && Number(option.value) === sub.tier;
    if (choice.selectedOptions[0]?.disabled) choice.value = options.find((o) => !o.disabled)?.value ?? "";
  }

  async function load(): Promise<Subscription | undefined> {
    try {
      const res = await session.withRefresh(() => session.billing.getSubscription({}));
      if (res.subscription) render(res.subscription);
      return res.subscription;
    } catch (err) {
      say(`Could not load your subscription: ${describeError(err)}`, true);
      return undefined;
    }
  }

  function stopFollowing() {
    if (following !== undefined) clearInterval(following);
    following = undefined;
  }

  /** Re-reads the subscription until its tier or status moves (the payment provider's webhook landed). */
  function follow(from: Subscription | undefined) {
    stopFollowing();
    const until = Date.now() + FOLLOW_FOR_MS;
    following = setInterval(async () => {
      if (!session.signedIn || Date.now() > until) return stopFollowing();
      const now = await load();
      if (now && (now.tier !== from?.tier || now.status !== from?.status)) {
        stopFollowing();
        say(`Your subscription is now ${word(Tier[now.tier], "TIER_")}. Sign in again (or wait for your next token refresh) for its limits to apply.`);
      }
    }, FOLLOW_EVERY_MS);
  }

  /** A paying user moves in place: the provider already holds their payment method, and a checkout would start a second subscription. */
  async function changeTier(tier: Tier) {
    say("Changing your tier…");
    try {
      const res = await session.withRefresh(() => session.billing.changeTier({ tier, idempotencyKey: crypto.randomUUID() }));
      if (res.subscription) render(res.subscription);
      say(`You are now on the ${word(Tier[tier], "TIER_")} tier. Sign in again (or wait for your next token refresh) for its limits to apply.`);
    } catch (err) {
      say(`Could not change your tier: ${describeError(err)}`, true);
    }
  }

  upgrade.addEventListener("click", async () => {
    const tier = Number(choice.value) as Tier;
    if (current && isPaid(current)) return changeTier(tier);
    // The tab opens on the click (popup blockers allow that), then goes to the checkout page.
    const tab = window.open("", "_blank");
    if (tab) tab.opener = null; // the checkout page gets no handle on the console
    say("Opening checkout…");
    try {
      const here = `${location.origin}/`;
      const res = await session.withRefresh(() =>
        session.billing.createCheckout({ tier, successUrl: `${here}?billing=paid`, cancelUrl: `${here}?billing=cancelled`, idempotencyKey: crypto.randomUUID() }),
      );
      if (tab) tab.location.href = res.checkoutUrl;
      else location.assign(res.checkoutUrl);
      say("Finish the payment in the checkout tab; this panel updates when it is done.");
      follow(current);
    } catch (err) {
      tab?.close();
      say(`Could not start checkout: ${describeError(err)}`, true);
    }
  });

  cancel.addEventListener("click", async () => {
    try {
      const res = await session.withRefresh(() => session.billing.cancelSubscription({ atPeriodEnd: true, idempotencyKey: crypto.randomUUID() }));
      if (res.subscription) render(res.subscription);
      say("Your subscription ends at the end of the period paid for.");
    } catch (err) {
      say(`Could not cancel: ${describeError(err)}`, true);
    }
  });

  // Back from checkout in its own tab (signed out there: sessions live in memory): the page's status line says how it went.
  const returned = new URLSearchParams(location.search).get("billing");
  const status = element("status");
  if (returned === "paid") status.textContent = "Payment received: you can close this tab and go back to the console.";
  if (returned === "cancelled") status.textContent = "Checkout cancelled: nothing was charged.";

  // Shown while someone is signed in: the header's #signed-in is the console's signed-in state.
  const signedIn = element("signed-in");
  const sync = () => {
    panel.hidden = signedIn.hidden;
    if (signedIn.hidden) {
      stopFollowing();
      details.replaceChildren();
    } else void load();
  };
  new MutationObserver(sync).observe(signedIn, { attributes: true, attributeFilter: ["hidden"] });
  sync();
}
