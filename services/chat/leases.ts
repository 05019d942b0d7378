/**
 * Leases on running turns: this instance renews the turns it runs, and
 * claims (SKIP LOCKED, so each goes to one instance) running turns whose
 * lease ran out because the instance holding them stopped, then runs them
 * from their last recorded step.
 */
import type { Database, Logger } from "../../platform/index.js";
import type { ChatMetrics } from "./metrics.js";
import { claimExpiredTurns, releaseLeases, renewLeases } from "./store.js";
import type { TurnRunner } from "./turn-runner.js";

/** Turns claimed per sweep, so one instance does not take every orphan at once. */
const claimPerSweep = 8;

/** Starts renewing and sweeping every third of `leaseMs`; the returned function stops both and lets go of the turns still held. */
export function startLeases(o: { db: Database; owner: string; runner: TurnRunner; leaseMs: number; log: Logger; metrics: ChatMetrics }): () => Promise<void> {
  const every = Math.max(100, Math.floor(o.leaseMs / 3));
  let stopped = false;
  let busy = false;

  async function tick(): Promise<void> {
    if (busy || stopped) return;
    busy = true;
    try {
      const ids = o.runner.ids();
      const held = await renewLeases(o.db.sql, o.owner, ids, o.leaseMs);
      for (const id of ids) if (!held.has(id) && o.runner.has(id)) o.runner.stop(id, "lost");
      const claimed = await claimExpiredTurns(o.db.sql, o.owner, o.leaseMs, claimPerSweep);
      for (const turn of claimed) {
        if (stopped) break;
        o.metrics.takeovers.inc();
        o.log.info({ turn: turn.id }, "taking over a turn whose instance stopped");
        o.runner.start(turn);
      }
    } catch (err) {
      o.log.warn({ err: String(err) }, "turn lease upkeep failed; retrying");
    } finally {
      busy = false;
    }
  }

  const timer = setInterval(() => void tick(), every);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    const ids = o.runner.ids();
    await o.runner.stopAll();
    await releaseLeases(o.db.sql, o.owner, ids).catch(() => {});
  };
}
