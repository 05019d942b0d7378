/**
 * A timer wheel for per-call deadlines: one interval timer for all calls
 * instead of a setTimeout each (thousands of calls in flight cost a Map entry
 * each, not a timer). Fires at most one resolution late.
 */

/** A scheduled deadline. */
export interface DeadlineHandle {
  readonly slot: number;
  readonly fn: () => void;
}

/** Deadlines of many calls. */
export interface DeadlineWheel {
  /** Calls `fn` once, at (or up to one resolution after) epoch ms `at`. */
  add(at: number, fn: () => void): DeadlineHandle;
  /** Forgets a deadline that has not fired. */
  cancel(h: DeadlineHandle): void;
  /** Stops the wheel; pending deadlines never fire. */
  stop(): void;
}

/** Creates a wheel ticking every `resolutionMs`. */
export function createDeadlineWheel(resolutionMs = 25): DeadlineWheel {
  const slots = new Map<number, Set<DeadlineHandle>>();
  let done = Math.floor(Date.now() / resolutionMs);
  const timer = setInterval(() => {
    const now = Math.floor(Date.now() / resolutionMs);
    for (let s = done + 1; s <= now; s++) {
      const due = slots.get(s);
      if (due === undefined) continue;
      slots.delete(s);
      for (const h of due) h.fn();
    }
    done = now;
  }, resolutionMs);
  timer.unref();
  return {
    add(at, fn) {
      let slot = Math.ceil(at / resolutionMs);
      if (slot <= done) slot = done + 1; // already due: the next tick
      const h = { slot, fn };
      let set = slots.get(slot);
      if (set === undefined) slots.set(slot, (set = new Set()));
      set.add(h);
      return h;
    },
    cancel(h) {
      const set = slots.get(h.slot);
      if (set === undefined) return;
      set.delete(h);
      if (set.size === 0) slots.delete(h.slot);
    },
    stop() {
      clearInterval(timer);
      slots.clear();
    },
  };
}
