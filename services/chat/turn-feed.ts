/**
 * Following a turn as a stream: the committed events above a sequence, in
 * order and once, then live ones until the turn ends. Events come from the
 * in-process hub when this instance runs the turn, and from PostgreSQL
 * otherwise (woken by NATS, with a slow poll as a safety net). At most
 * `maxBuffered` live events wait for a slow client; past that the buffer is
 * dropped and the stream reads from PostgreSQL at the client's pace, so a
 * slow browser never makes the server buffer without bound.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { ChatResponse } from "../../gen/switchyard/chat/v1/chat_pb.js";
import type { Database } from "../../platform/index.js";
import { loadEvents, loadTurn, type TurnRow } from "./store.js";
import type { TurnHub } from "./turn-hub.js";
import { decodeWake, turnSubject } from "./turn-log.js";

/** Live events held for one stream before it falls back to reading PostgreSQL. */
export const maxBuffered = 256;
const pollMs = 1000;

/** What a feed reads from. */
export interface FeedDeps {
  readonly db: Database;
  readonly hub: TurnHub;
  readonly nats: NatsConnection | undefined;
}

/** The error a stream of a turn that did not succeed ends with. */
export function errorOfTurn(turn: TurnRow): ConnectError | undefined {
  if (turn.state === "failed") return new ConnectError(turn.error_message, turn.error_code as Code);
  if (turn.state === "cancelled") return new ConnectError("the turn was cancelled before it finished", Code.Canceled);
  return undefined;
}

/** Streams the events of `turnId` above `after` until the turn ends; throws the turn's error if it failed. */
export async function* followTurn(deps: FeedDeps, turnId: string, after: number, signal: AbortSignal): AsyncGenerator<ChatResponse> {
  let last = after;
  let buffer: ChatResponse[] = [];
  let dirty = true;
  let ended: { error: Error | undefined } | undefined;
  let wake: (() => void) | undefined;
  /** The highest sequence up to which every event was passed on or waits in the buffer. */
  const held = () => {
    let upTo = last;
    for (const e of buffer) if (Number(e.sequence) === upTo + 1) upTo++;
    return upTo;
  };
  const poke = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const unlisten = deps.hub.listen(turnId, {
    events(evs) {
      if (buffer.length + evs.length > maxBuffered) {
        buffer = [];
        dirty = true;
      } else buffer.push(...evs);
      poke();
    },
    ended(error) {
      ended = { error };
      poke();
    },
  });
  let sub: Subscription | undefined;
  try {
    sub = deps.nats?.subscribe(turnSubject(turnId), {
      callback: (_err, msg) => {
        // What this instance's own commits woke us for, its hub already handed over.
        const sequence = decodeWake(msg.data);
        if (sequence !== undefined && Number(sequence) <= held()) return;
        dirty = true;
        poke();
      },
    });
  } catch {
    sub = undefined; // NATS down: the poll still finds new events.
  }
  try {
    for (;;) {
      if (signal.aborted) return;
      let progressed = false;
      while (buffer.length > 0 && !dirty) {
        const e = buffer[0]!;
        if (Number(e.sequence) <= last) {
          buffer.shift();
          continue;
        }
        if (Number(e.sequence) !== last + 1) {
          dirty = true;
          break;
        }
        buffer.shift();
        last = Number(e.sequence);
        progressed = true;
        yield e;
        if (e.event.case === "done") return;
      }
      if (dirty) {
        dirty = false;
        const evs = await loadEvents(deps.db.sql, turnId, last);
        for (const e of evs) {
          last = Number(e.sequence);
          progressed = true;
          yield e;
          if (e.event.case === "done") return;
        }
        if (evs.length === 500) dirty = true;
        if (progressed) continue;
        // Woken with nothing new: perhaps the turn ended.
        if (await checkEnded()) return;
      }
      if (ended !== undefined && buffer.length === 0) {
        // Everything the runner wrote was emitted before it reported the end.
        if (ended.error !== undefined) throw ended.error;
        dirty = true;
        ended = undefined;
        continue;
      }
      if (!progressed) {
        const timedOut = await new Promise<boolean>((resolve) => {
          const t = setTimeout(() => resolve(true), pollMs);
          const onAbort = () => resolve(false);
          signal.addEventListener("abort", onAbort, { once: true });
          wake = () => {
            clearTimeout(t);
            signal.removeEventListener("abort", onAbort);
            resolve(false);
          };
        });
        wake = undefined;
        if (timedOut && (await checkEnded())) return;
      }
    }
  } finally {
    unlisten();
    sub?.unsubscribe();
  }

  /** True when the turn is over and every event was passed (throws the turn's error if it failed). */
  async function checkEnded(): Promise<boolean> {
    const turn = await loadTurn(deps.db.sql, turnId);
    if (turn === undefined || turn.state === "running") return false;
    const rest = await loadEvents(deps.db.sql, turnId, last, 1);
    if (rest.length > 0) {
      dirty = true;
      return false;
    }
    const err = errorOfTurn(turn);
    if (err !== undefined) throw err;
    return true;
  }
}
