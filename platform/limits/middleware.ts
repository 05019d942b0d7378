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
import { principalKey, type Principal } from "../auth/principal.js";
import type { Logger } from "../log.js";
import { afterCheck, type Middleware, type RpcCall, type RpcHandler } from "../rpc/pipeline.js";
import type { RateLimiter } from "./limiter.js";

/** Requests per minute by tier. */
export interface TierLimits {
  readonly free: number;
  readonly pro: number;
  readonly power: number;
  readonly team: number;
}

/** Longest the limiter may take before a call goes through unchecked. */
const CHECK_TIMEOUT_MS = 250;
const tierNames: Record<Tier, keyof TierLimits> = {
  [Tier.UNSPECIFIED]: "free",
  [Tier.FREE]: "free",
  [Tier.PRO]: "pro",
  [Tier.POWER]: "power",
  [Tier.TEAM]: "team",
};

/** Creates the middleware (see the module comment). */
export function rateLimit(limiter: RateLimiter, limits: TierLimits, log: Logger): Middleware {
  let lastWarning = 0;
  const check = async (p: Principal): Promise<void> => {
    const tier = tierNames[p.tier] ?? "free";
    const perMinute = limits[tier];
    let timer: NodeJS.Timeout | undefined;
    let decision;
    try {
      decision = await Promise.race([
        limiter.take(`user:${p.userId}`, perMinute),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), CHECK_TIMEOUT_MS);
        }),
      ]);
    } catch (err) {
      decision = undefined;
      if (Date.now() - lastWarning > 10_000) {
        lastWarning = Date.now();
        log.warn({ err: String(err) }, "rate limiter unavailable; letting calls through");
      }
    } finally {
      clearTimeout(timer);
    }
    if (decision === undefined || decision.allowed) return;
    const ms = decision.retryAfterMs;
    throw new ConnectError(
      `rate limit exceeded: the ${tier} tier allows ${perMinute} requests per minute; retry in ${(ms / 1000).toFixed(1)} s`,
      Code.ResourceExhausted,
      undefined,
      [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 } } }],
    );
  };
  return (method, next): RpcHandler =>
    afterCheck(method, (call: RpcCall) => {
      const p = call.ctx.values.get(principalKey);
      return p === undefined || p.roles.includes("service") ? undefined : check(p);
    }, next);
}
