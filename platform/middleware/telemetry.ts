/**
 * Request context, one JSON log line and metrics for every RPC, on every
 * protocol path. The log line carries the request id and trace id, the code
 * and the duration; never a header or a message body, so nothing secret can
 * reach it.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "../log.js";
import type { PlatformMetrics } from "../metrics.js";
import { requestContextFrom, runWithRequest } from "../request-context.js";
import { isStreamResult, observeResult, type Middleware, type RpcResult } from "../rpc/pipeline.js";
import { endServerSpan, inServerSpan, requestOfServerSpan, serverSpanStarter } from "../telemetry/tracing.js";

/** Name of a gRPC code as logs and metrics show it ("OK", "NOT_FOUND"...). */
export function codeName(code: Code | 0): string {
  if (code === 0) return "OK";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

function codeOf(err: unknown): Code | 0 {
  if (err === undefined) return 0;
  return err instanceof ConnectError ? err.code : Code.Internal;
}

/** Creates the telemetry middleware. */
export function telemetry(log: Logger, metrics: PlatformMetrics): Middleware {
  return (method, next) => {
    const service = method.parent.typeName;
    const name = method.name;
    const rpc = `${service}/${name}`;
    // prom-client hashes the label object on every inc/observe; resolve each
    // (protocol, code) pair of this method to its children once.
    const children = new Map<string, { count: { inc(): void }; time: { observe(v: number): void } }>();
    const startServerSpan = serverSpanStarter(rpc, service, name);
    const metricsFor = (protocol: string, code: string) => {
      const key = `${protocol} ${code}`;
      let c = children.get(key);
      if (c === undefined) {
        c = {
          count: metrics.rpcTotal.labels({ service, method: name, protocol, code }),
          time: metrics.rpcDuration.labels({ service, method: name, code }),
        };
        children.set(key, c);
      }
      return c;
    };
    return (call) => {
      const start = performance.now();
      const timeout = call.ctx.timeoutMs();
      const deadline = timeout === undefined ? undefined : Date.now() + timeout;
      // The SERVER span (undefined while tracing is off) names the request's trace and span ids.
      const server = startServerSpan(call.ctx.protocolName, call.header);
      const rc = server === undefined ? requestContextFrom(call.header, deadline) : requestOfServerSpan(server.span, call.header, deadline);
      const enter = <T>(fn: () => T): T => (server === undefined ? runWithRequest(rc, fn) : inServerSpan(server, () => runWithRequest(rc, fn)));
      const result = enter(() => next(call));
      const traced = isStreamResult(result) ? bindStream(enter, result) : result;
      return observeResult(traced, (err) => {
        if (server !== undefined) endServerSpan(server, err);
        const code = codeName(codeOf(err));
        const seconds = (performance.now() - start) / 1000;
        const m = metricsFor(call.ctx.protocolName, code);
        m.count.inc();
        m.time.observe(seconds);
        const fields = {
          rpc,
          protocol: call.ctx.protocolName,
          code,
          ms: Math.round(seconds * 10000) / 10,
          requestId: rc.requestId,
          traceId: rc.traceId,
          spanId: rc.spanId,
        };
        if (codeOf(err) === Code.Internal || codeOf(err) === Code.Unknown) {
          log.error({ ...fields, err: err instanceof ConnectError ? err.rawMessage : String(err) }, "rpc failed");
        } else {
          log.info(fields, "rpc");
        }
      });
    };
  };
}

/** Resumes each step of a stream inside the request's context (`enter`). */
function bindStream(enter: <T>(fn: () => T) => T, stream: AsyncIterable<unknown>): RpcResult {
  return {
    [Symbol.asyncIterator]() {
      const it = stream[Symbol.asyncIterator]();
      return {
        next: () => enter(() => it.next()),
        return: (v?: unknown) => enter(() => it.return?.(v) ?? Promise.resolve({ done: true as const, value: v })),
        throw: (e?: unknown) => enter(() => it.throw?.(e) ?? Promise.reject(e)),
      };
    },
  };
}
