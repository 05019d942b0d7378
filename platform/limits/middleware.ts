/**
 * The rate-limit middleware: every call made by a user (a Principal set by
 * the token check) counts against that user's per-minute budget for their
 * tier, shared by all instances. Over budget, the call answers
 * RESOURCE_EXHAUSTED with a google.rpc.RetryInfo detail saying how long to
 * wait. Calls without a principal (public RPCs, health) and calls by other
 * services (role "service") are not counted.
 *
 * If the limiter's store cannot answer (the database is down or slow), the
 * call goes through and a warning is logged: limits protect capacity, and an
 * outage of PostgreSQL should not also take down RPCs that do not need it.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { SERVICE_ROLE, tierClaim } from "../auth/claims.js";
import { principalKey, type Principal } from "../auth/principal.js";
import type { Logger } from "../log.js";
import { afterCheck, type Middleware, type RpcCall, type RpcHandler } from "../rpc/pipeline.js";
import type { RateDecision, RateLimiter } from "./limiter.js";

/** Requests per minute by tier (see vars.ts, which maps the settings). */
export type TierLimits = Readonly<Partial<Record<Tier, number>>> & { readonly [Tier.FREE]: number };

/** Longest the limiter may take before a call goes through unchecked. */
const CHECK_TIMEOUT_MS = 250;

/** Creates the middleware (see the module comment). */
export function rateLimit(limiter: RateLimiter, limits: TierLimits, log: Logger): Middleware {
  let lastWarning = 0;
  const warn = (err: unknown) => {
    if (Date.now() - lastWarning > 10_000) {
      lastWarning = Date.now();
      log.warn({ err: String(err) }, "rate limiter unavailable; letting calls through");
    }
  };
  const refuse = (tier: Tier, perMinute: number, decision: RateDecision | undefined): void => {
    if (decision === undefined || decision.allowed) return;
    const ms = decision.retryAfterMs;
    // An unspecified tier is limited as free (the token check admits it only for services).
    const name = tierClaim(tier) ?? tierClaim(Tier.FREE);
    throw new ConnectError(
      `rate limit exceeded: the ${name} tier allows ${perMinute} requests per minute; retry in ${(ms / 1000).toFixed(1)} s`,
      Code.ResourceExhausted,
      undefined,
      [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 } } }],
    );
  };
  /** Waits for a decision the limiter could not make locally, at most CHECK_TIMEOUT_MS. */
  const slow = async (pending: Promise<RateDecision>, tier: Tier, perMinute: number): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    let decision: RateDecision | undefined;
    try {
      decision = await Promise.race([
        pending,
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), CHECK_TIMEOUT_MS);
        }),
      ]);
    } catch (err) {
      warn(err);
    } finally {
      clearTimeout(timer);
    }
    refuse(tier, perMinute, decision);
  };
  const check = (p: Principal): Promise<void> | undefined => {
    const tier = limits[p.tier] === undefined ? Tier.FREE : p.tier;
    const perMinute = limits[tier]!;
    let decision: RateDecision | Promise<RateDecision>;
    try {
      decision = limiter.take(`user:${p.userId}`, perMinute);
    } catch (err) {
      warn(err);
      return undefined;
    }
    if (decision instanceof Promise) return slow(decision, tier, perMinute);
    try {
      refuse(tier, perMinute, decision);
    } catch (err) {
      return Promise.reject(err);
    }
    return undefined;
  };
  return (method, next): RpcHandler =>
    afterCheck(method, (call: RpcCall) => {
      const p = call.ctx.values.get(principalKey);
      return p === undefined || p.roles.includes(SERVICE_ROLE) ? undefined : check(p);
    }, next);
}
