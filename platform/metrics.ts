/**
 * Prometheus metrics (prom-client): per-RPC rate, errors and duration, plus
 * Node's default process metrics, served at /metrics.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The metrics a platform process exports. */
export interface PlatformMetrics {
  readonly registry: Registry;
  /** Completed RPCs by service, method, protocol and gRPC code. */
  readonly rpcTotal: Counter<"service" | "method" | "protocol" | "code">;
  /** RPC duration in seconds by service, method and gRPC code. */
  readonly rpcDuration: Histogram<"service" | "method" | "code">;
}

/** Creates a registry with the RPC metrics and Node's default metrics. */
export function createMetrics(): PlatformMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    rpcTotal: new Counter({
      name: "rpc_server_handled_total",
      help: "RPCs completed, by service, method, protocol and gRPC status code",
      labelNames: ["service", "method", "protocol", "code"],
      registers: [registry],
    }),
    rpcDuration: new Histogram({
      name: "rpc_server_handling_seconds",
      help: "Time from the start of an RPC to its status, by service, method and code",
      labelNames: ["service", "method", "code"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
  };
}
