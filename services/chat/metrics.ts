/** The chat service's Prometheus metrics, in the process's registry (served at /metrics). */
import { Counter, Histogram, type Registry } from "prom-client";

/** What chat counts. */
export interface ChatMetrics {
  /** Turns ended, by tier and outcome (done, failed, cancelled). */
  readonly turns: Counter<"tier" | "outcome">;
  /** Tool calls the model asked for, by outcome (ok, error, refused, denied). */
  readonly toolCalls: Counter<"outcome">;
  /** Seconds from a model call's start to its first text or tool call. */
  readonly timeToFirstToken: Histogram<"provider">;
  /** Model tokens, by tier and direction (input, output). */
  readonly tokens: Counter<"tier" | "direction">;
  /** Turns this instance took over from an instance that stopped. */
  readonly takeovers: Counter<string>;
}

/** Registers chat's metrics in `registry`. */
export function createChatMetrics(registry: Registry): ChatMetrics {
  return {
    turns: new Counter({ name: "chat_turns_total", help: "Chat turns and agent runs ended, by tier and outcome", labelNames: ["tier", "outcome"], registers: [registry] }),
    toolCalls: new Counter({ name: "chat_tool_calls_total", help: "Tool calls the model asked for, by outcome", labelNames: ["outcome"], registers: [registry] }),
    timeToFirstToken: new Histogram({
      name: "chat_time_to_first_token_seconds",
      help: "Time from the start of a model call to its first streamed output",
      labelNames: ["provider"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    tokens: new Counter({ name: "chat_tokens_total", help: "Language model tokens used, by tier and direction", labelNames: ["tier", "direction"], registers: [registry] }),
    takeovers: new Counter({ name: "chat_turn_takeovers_total", help: "Turns this instance took over after the instance running them stopped", registers: [registry] }),
  };
}
