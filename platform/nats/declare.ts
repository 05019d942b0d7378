/**
 * The one way the mesh declares its JetStream streams and KV buckets (the
 * event bus's EVENTS and EVENTS_DLQ, every stream and bucket a module declares).
 *
 * Rules, the same for every object:
 * - replicas: NATS_REPLICAS, never lower than what the server already has
 *   (an operator's R3 stream stays R3 under a process configured for R1);
 * - settings the code relies on (storage, retention, discard, direct get,
 *   RePublish, the declared subjects) are put back when found different:
 *   declared wins, and the process logs both values;
 * - limits an operator may tune (max_age, max_bytes, max_msgs,
 *   max_msgs_per_subject, max_msg_size, duplicate_window) are changed only
 *   while they still hold what the mesh declared last time (recorded in the
 *   stream's description); a value someone changed by hand wins, logged with
 *   the declared one;
 * - a server that cannot answer yet (a node down, a leader being elected,
 *   "no suitable peers") is retried with capped backoff; start waits for it
 *   up to a budget (NATS_DECLARE_BUDGET_MS), then serves with `/readyz`
 *   false naming each object still missing while it keeps trying;
 * - every declared object stays watched: `/readyz` is false while one cannot
 *   be reached, and an object the server lost (a store wiped) is declared again.
 */
import { DiscardPolicy, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from "@nats-io/jetstream";
import { nanos, type NatsConnection } from "@nats-io/nats-core";
import type { Logger } from "../log.js";
import { isNatsConnected } from "./connection.js";
import { isNatsUnavailable } from "./errors.js";

/** A stream as the mesh declares it; `num_replicas` comes from NATS_REPLICAS, never from here. */
export type StreamDeclaration = Partial<Omit<StreamConfig, "num_replicas" | "description">> & { name: string; subjects: string[] };

/** Limits an operator may tune by hand; the mesh changes them only while they hold its own last declaration. */
export const TUNABLE_SETTINGS = ["max_age", "max_bytes", "max_msgs", "max_msgs_per_subject", "max_msg_size", "duplicate_window"] as const;

/** What the description of a declared stream starts with; the declared limits follow as JSON. */
const DESCRIPTION_MARK = "switchyard declared ";

/** One difference between a declared and a found setting, and which one the stream keeps. */
export interface SettingDifference {
  readonly stream: string;
  readonly setting: string;
  readonly declared: unknown;
  readonly found: unknown;
  readonly wins: "declared" | "found";
  readonly why: string;
}

/** What reconciling a found stream with its declaration decided. */
export interface Reconciled {
  /** The full configuration to send as an update; undefined when nothing needs changing. */
  readonly update: StreamConfig | undefined;
  readonly differences: SettingDifference[];
}

/** The configuration a new stream is created with. */
export function creationConfig(declared: StreamDeclaration, replicas: number): Partial<StreamConfig> & { name: string } {
  return { ...declared, num_replicas: replicas, description: describe(declared) };
}

/**
 * Decides what to change on `found` so that it honours `declared` under the
 * rules in the module comment; pure, so it is tested without a server.
 */
export function reconcile(declared: StreamDeclaration, found: StreamConfig, replicas: number): Reconciled {
  const differences: SettingDifference[] = [];
  const next: Record<string, unknown> = { ...found };
  const have = found as unknown as Record<string, unknown>;
  const lastDeclared = declaredLimits(found.description);
  const note = (setting: string, wanted: unknown, wins: "declared" | "found", why: string) =>
    differences.push({ stream: declared.name, setting, declared: wanted, found: have[setting], wins, why });

  for (const [setting, wanted] of Object.entries(declared)) {
    if (setting === "name" || setting === "subjects" || same(wanted, have[setting])) continue;
    if ((TUNABLE_SETTINGS as readonly string[]).includes(setting)) {
      const ours = lastDeclared !== undefined && same(lastDeclared[setting], have[setting]);
      if (ours) {
        next[setting] = wanted;
        note(setting, wanted, "declared", "the found value is the mesh's own earlier declaration");
      } else note(setting, wanted, "found", "changed by hand on the server: an operator's limit is kept");
    } else {
      next[setting] = wanted;
      note(setting, wanted, "declared", "the mesh depends on it");
    }
  }
  const missing = declared.subjects.filter((s) => !found.subjects?.includes(s));
  if (missing.length > 0) {
    next.subjects = [...(found.subjects ?? []), ...missing];
    differences.push({ stream: declared.name, setting: "subjects", declared: declared.subjects, found: found.subjects, wins: "declared", why: "the mesh publishes there (subjects found are kept too)" });
  }
  const foundReplicas = found.num_replicas ?? 1;
  if (foundReplicas < replicas) {
    next.num_replicas = replicas;
    differences.push({ stream: declared.name, setting: "num_replicas", declared: replicas, found: foundReplicas, wins: "declared", why: "NATS_REPLICAS raises it" });
  } else if (foundReplicas > replicas) {
    differences.push({ stream: declared.name, setting: "num_replicas", declared: replicas, found: foundReplicas, wins: "found", why: "replicas are never lowered" });
  }
  const description = describe(declared);
  const changed = differences.some((d) => d.wins === "declared") || found.description !== description;
  next.description = description;
  return { update: changed ? (next as unknown as StreamConfig) : undefined, differences };
}

/** The subjects of KV bucket `bucket`'s keys (what its stream captures). */
export function kvSubjects(bucket: string): string {
  return `$KV.${bucket}.>`;
}

/**
 * The stream behind KV bucket `bucket`, configured as `@nats-io/kv` creates
 * it (so `new Kvm(nc).open(bucket)` works on it), declared like any stream.
 */
export function kvBucketStream(bucket: string, options: { history?: number; ttlMs?: number; republish?: { src: string; dest: string } } = {}): StreamDeclaration {
  return {
    name: `KV_${bucket}`,
    subjects: [kvSubjects(bucket)],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.New,
    max_msgs_per_subject: options.history ?? 1,
    max_age: nanos(options.ttlMs ?? 0),
    allow_rollup_hdrs: true,
    allow_direct: true,
    ...(options.republish ? { republish: options.republish } : {}),
  };
}

/** Whether the server's refusal is one that passes (a node down, an election), so the declaration is retried. */
export function isRetryableDeclareError(err: unknown): boolean {
  if (isNatsUnavailable(err)) return true;
  const message = err instanceof Error ? err.message : String(err);
  return /temporarily unavailable|insufficient resources|no suitable peers|timeout|offline|no responders|not currently available|leader/i.test(message);
}

/** The declarer's tuning. */
export interface DeclarerOptions {
  /** Replicas of every declared object (NATS_REPLICAS). */
  readonly replicas: number;
  readonly log: Logger;
  /** How long `declare` waits, from the declarer's creation, before it lets start go on with `/readyz` false (NATS_DECLARE_BUDGET_MS). */
  readonly budgetMs: number;
  /** How often declared objects are checked for reachability (default 5000 ms). */
  readonly checkIntervalMs?: number;
}

/** Declares the process's streams and buckets and reports whether each is there. */
export interface StreamDeclarer {
  /**
   * Declares `streams` (in order). Resolves once all are declared, or once
   * the start budget is spent (they keep being retried; `/readyz` names
   * them). Rejects when the server refuses one for good (e.g. its subjects
   * overlap another stream's, or NATS_REPLICAS exceeds the cluster).
   */
  declare(streams: readonly StreamDeclaration[]): Promise<void>;
  /** `/readyz` checks, one per declared object: `jetstream <name>`. Filled in as objects are declared. */
  readonly readiness: Record<string, () => boolean>;
  /** Whether every declared object is declared and reachable now. */
  allReady(): boolean;
  /** Stops retrying and watching. */
  stop(): void;
}

interface Tracked {
  readonly declaration: StreamDeclaration;
  declared: boolean;
  reachable: boolean;
}

/** Creates the process's declarer on `nc`; see the module comment for its rules. */
export function createStreamDeclarer(nc: NatsConnection, options: DeclarerOptions): StreamDeclarer {
  const { replicas, log } = options;
  const deadline = Date.now() + options.budgetMs;
  const tracked = new Map<string, Tracked>();
  const readiness: Record<string, () => boolean> = {};
  const stopped = new AbortController();
  let jsm: Promise<JetStreamManager> | undefined;
  const manager = () => (jsm ??= jetstreamManager(nc, { timeout: 4000, checkAPI: false }));

  const declareOnce = async (t: Tracked) => {
    await declareStream(await manager(), t.declaration, replicas, log);
    t.declared = true;
    t.reachable = true;
  };

  /** Retries `t` with capped backoff until declared; rejects on a refusal that will not pass. */
  const declareUntilDone = async (t: Tracked) => {
    for (let attempt = 0; !stopped.signal.aborted; attempt++) {
      try {
        await declareOnce(t);
        if (attempt > 0) log.info({ stream: t.declaration.name, attempts: attempt + 1 }, "JetStream object declared after retries");
        return;
      } catch (err) {
        if (!isRetryableDeclareError(err)) throw refusal(t.declaration.name, err, replicas);
        if (attempt % 5 === 0) log.warn({ stream: t.declaration.name, attempt: attempt + 1, err: String(err) }, "JetStream not ready for a declaration; retrying");
        await pause(backoffMs(attempt), stopped.signal);
      }
    }
  };

  const check = async () => {
    if (!isNatsConnected(nc)) return;
    for (const t of tracked.values()) {
      if (!t.declared || stopped.signal.aborted) continue;
      try {
        await (await manager()).streams.info(t.declaration.name);
        t.reachable = true;
      } catch (err) {
        t.reachable = false;
        if (isNotFound(err)) {
          log.warn({ stream: t.declaration.name }, "a declared JetStream object is gone from the server; declaring it again");
          t.declared = false;
          void declareUntilDone(t).catch((e: unknown) => log.error({ stream: t.declaration.name, err: String(e) }, "declaring again failed"));
        }
      }
    }
  };
  let checking = false;
  const checkNow = () => {
    if (checking) return;
    checking = true;
    void check().finally(() => (checking = false));
  };
  const timer = setInterval(checkNow, options.checkIntervalMs ?? 5000);
  timer.unref();
  // Back from a disconnect: look at once (a server that lost its store gets its objects back).
  void (async () => {
    for await (const s of nc.status()) if (s.type === "reconnect" && !stopped.signal.aborted) checkNow();
  })().catch(() => undefined);

  return {
    readiness,
    async declare(streams) {
      const batch = streams.map((declaration) => {
        const t: Tracked = { declaration, declared: false, reachable: false };
        tracked.set(declaration.name, t);
        readiness[`jetstream ${declaration.name}`] = () => t.declared && t.reachable && isNatsConnected(nc);
        return t;
      });
      // In order (one after another), so a refusal stops the rest: start fails with its message.
      const all = (async () => {
        for (const t of batch) await declareUntilDone(t);
      })();
      const budget = Math.max(0, deadline - Date.now());
      let timeout: NodeJS.Timeout | undefined;
      const spent = new Promise<"spent">((resolve) => (timeout = setTimeout(() => resolve("spent"), budget)));
      try {
        const outcome = await Promise.race([all.then(() => "done" as const), spent]);
        if (outcome === "spent") {
          const waiting = batch.filter((t) => !t.declared).map((t) => t.declaration.name);
          log.warn({ waiting, budgetMs: options.budgetMs }, "JetStream objects not declared within the start budget; serving with /readyz false while retrying");
          all.catch((err: unknown) => log.error({ err: String(err) }, "a JetStream declaration was refused"));
        }
      } finally {
        clearTimeout(timeout);
      }
    },
    allReady: () => Object.values(readiness).every((probe) => probe()),
    stop() {
      stopped.abort();
      clearInterval(timer);
    },
  };
}

/**
 * One declaration attempt of `declared` with `replicas`: creates the stream,
 * or reconciles the one found (logging each difference and which side wins).
 */
export async function declareStream(jsm: JetStreamManager, declared: StreamDeclaration, replicas: number, log: Logger): Promise<void> {
  let found = await infoOrUndefined(jsm, declared.name);
  if (found === undefined) {
    try {
      await jsm.streams.add(creationConfig(declared, replicas));
      log.info({ stream: declared.name, replicas }, "JetStream stream created");
      return;
    } catch (err) {
      // Another instance created it first: reconcile with theirs.
      if (!/already in use|already exists/i.test((err as Error).message)) throw err;
      found = await infoOrUndefined(jsm, declared.name);
      if (found === undefined) throw err;
    }
  }
  const { update, differences } = reconcile(declared, found, replicas);
  for (const d of differences) {
    // Replicas raised or an operator's higher count kept is expected; any other difference deserves a look.
    const level = d.setting === "num_replicas" ? "info" : "warn";
    log[level]({ stream: d.stream, setting: d.setting, declared: d.declared, found: d.found, wins: d.wins, why: d.why }, `JetStream ${d.stream}: ${d.setting} differs; ${d.wins} wins`);
  }
  if (update !== undefined) await jsm.streams.update(declared.name, update);
}

async function infoOrUndefined(jsm: JetStreamManager, name: string): Promise<StreamConfig | undefined> {
  try {
    return (await jsm.streams.info(name)).config;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

function refusal(name: string, err: unknown, replicas: number): Error {
  const message = err instanceof Error ? err.message : String(err);
  const hint = replicas > 1 && /replicas|clustered|peers/i.test(message) ? ` (NATS_REPLICAS=${replicas} needs a JetStream cluster of at least ${replicas} nodes)` : "";
  return new Error(`JetStream refused stream ${name}: ${message}${hint}`, { cause: err });
}

function describe(declared: StreamDeclaration): string {
  const limits: Record<string, unknown> = {};
  for (const k of TUNABLE_SETTINGS) if (declared[k] !== undefined) limits[k] = declared[k];
  return `${DESCRIPTION_MARK}${JSON.stringify(limits)}`;
}

function declaredLimits(description: string | undefined): Record<string, unknown> | undefined {
  if (description === undefined || !description.startsWith(DESCRIPTION_MARK)) return undefined;
  try {
    return JSON.parse(description.slice(DESCRIPTION_MARK.length)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/**
 * Whether the found value `found` honours `wanted`: objects key by key (the
 * server adds fields of its own, e.g. RePublish's headers_only), and a
 * wanted false or 0 matches a field the server leaves out.
 */
function same(wanted: unknown, found: unknown): boolean {
  if (found === undefined && (wanted === false || wanted === 0)) return true;
  if (typeof wanted === "object" && wanted !== null && !Array.isArray(wanted)) {
    if (typeof found !== "object" || found === null) return false;
    return Object.entries(wanted).every(([k, v]) => same(v, (found as Record<string, unknown>)[k]));
  }
  return JSON.stringify(wanted) === JSON.stringify(found);
}

/** Capped exponential backoff with jitter: about 250 ms, 500 ms, 1 s ... up to 5 s. */
function backoffMs(attempt: number): number {
  const base = Math.min(5000, 250 * 2 ** Math.min(attempt, 10));
  return base / 2 + Math.random() * (base / 2);
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });
}

/** Whether `err` says a stream or consumer does not exist. */
export function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; code?: number; message?: string };
  return e.name === "StreamNotFoundError" || e.name === "ConsumerNotFoundError" || e.code === 404 || /not found/i.test(e.message ?? "");
}
