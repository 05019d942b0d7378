/**
 * Who is calling: set by the platform's token check on every RPC that is not
 * public, read by handlers with `ctx.values.get(principalKey)`.
 */
import { createContextKey } from "@connectrpc/connect";
import type { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";

/** The verified caller of an RPC. */
export interface Principal {
  /** The user id (`sub` of the access token). */
  readonly userId: string;
  readonly tier: Tier;
  /** Roles from the token; "service" marks another Switchyard service. */
  readonly roles: readonly string[];
  /** When the access token expires (epoch ms). */
  readonly expiresAt: number;
}

/** Context key holding the Principal; undefined on public RPCs called without a token. */
export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "principal" });
