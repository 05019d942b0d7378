/**
 * Device tickets: single-use credentials of at most 30 seconds for clients
 * that cannot set an Authorization header on the WebSocket upgrade. Stored in
 * a KV bucket (bucket TTL 30 s; the expiry inside the record is what counts)
 * under the SHA-256 of the ticket, so the ticket itself is stored nowhere;
 * any instance redeems it, once: redemption deletes the key with
 * compare-and-set, and only one delete of a revision can succeed.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { KV } from "@nats-io/kv";
import { createHash, randomBytes } from "node:crypto";
import type { Tier } from "../gen/switchyard/common/v1/tier_pb.js";
import { DeviceTicketRecordSchema } from "../gen/switchyard/device/v1/relay_pb.js";
import type { Principal } from "../platform/index.js";

/** Most a ticket lives. */
export const TICKET_TTL_MS = 30_000;

/** Issuing and redeeming tickets. */
export interface Tickets {
  /** Issues a ticket for `p`; it expires at the earlier of 30 s and the token's expiry. */
  issue(p: Principal): Promise<{ ticket: string; expireAt: number }>;
  /** Redeems a ticket once; UNAUTHENTICATED if unknown, used or expired. */
  redeem(ticket: string): Promise<Principal>;
}

const keyOf = (ticket: string) => createHash("sha256").update(ticket).digest("hex");

/** Tickets over the tickets bucket. */
export function createTickets(kv: KV): Tickets {
  const invalid = () => new ConnectError("invalid, used or expired ticket", Code.Unauthenticated);
  return {
    async issue(p) {
      const ticket = randomBytes(32).toString("base64url");
      const expireAt = Math.min(Date.now() + TICKET_TTL_MS, p.expiresAt);
      const record = create(DeviceTicketRecordSchema, {
        userId: p.userId,
        roles: [...p.roles],
        tier: p.tier,
        authExpireTime: timestampFromMs(p.expiresAt),
        expireTime: timestampFromMs(expireAt),
      });
      try {
        await kv.put(keyOf(ticket), toBinary(DeviceTicketRecordSchema, record));
      } catch (err) {
        throw new ConnectError(`ticket store unreachable: ${(err as Error).message}`, Code.Unavailable);
      }
      return { ticket, expireAt };
    },
    async redeem(ticket) {
      if (!/^[A-Za-z0-9_-]{43}$/.test(ticket)) throw invalid();
      const key = keyOf(ticket);
      const e = await kv.get(key).catch(() => {
        throw new ConnectError("ticket store unreachable", Code.Unavailable);
      });
      if (e === null || e.operation !== "PUT") throw invalid();
      try {
        await kv.delete(key, { previousSeq: e.revision }); // the one redemption
      } catch {
        throw invalid();
      }
      const r = fromBinary(DeviceTicketRecordSchema, e.value);
      if (r.expireTime === undefined || timestampMs(r.expireTime) <= Date.now()) throw invalid();
      return { userId: r.userId, roles: r.roles, tier: r.tier as Tier, expiresAt: r.authExpireTime ? timestampMs(r.authExpireTime) : 0 };
    },
  };
}
