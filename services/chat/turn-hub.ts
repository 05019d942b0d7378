/**
 * In-process fan-out of committed turn events to the streams following the
 * turn on this instance. Streams on other instances learn of new events
 * through a NATS wake-up (turnSubject) and read them from PostgreSQL.
 */
import type { ChatResponse } from "../../gen/switchyard/chat/v1/chat_pb.js";

/** A stream following a turn. */
export interface TurnListener {
  /** Committed events, in order. */
  events(events: readonly ChatResponse[]): void;
  /** The turn ended; `error` is how it failed (undefined when it succeeded). */
  ended(error: Error | undefined): void;
}

/** The process's fan-out. */
export interface TurnHub {
  /** Adds a listener of `turnId`; returns the function that removes it. */
  listen(turnId: string, listener: TurnListener): () => void;
  emit(turnId: string, events: readonly ChatResponse[]): void;
  ended(turnId: string, error: Error | undefined): void;
}

/** Creates an empty hub. */
export function createTurnHub(): TurnHub {
  const listeners = new Map<string, Set<TurnListener>>();
  return {
    listen(turnId, listener) {
      let set = listeners.get(turnId);
      if (set === undefined) listeners.set(turnId, (set = new Set()));
      set.add(listener);
      return () => {
        set.delete(listener);
        if (set.size === 0) listeners.delete(turnId);
      };
    },
    emit(turnId, events) {
      for (const l of listeners.get(turnId) ?? []) l.events(events);
    },
    ended(turnId, error) {
      for (const l of listeners.get(turnId) ?? []) l.ended(error);
    },
  };
}
