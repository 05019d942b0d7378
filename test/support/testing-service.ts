/**
 * The conformance service the interop tests and benchmarks run against,
 * implemented once against the generated types like any real service.
 */
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import { TestingService, type Nested } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { register, type ServiceRegistration } from "../../platform/rpc/pipeline.js";

function echoMetadata(ctx: HandlerContext): void {
  const initial = ctx.requestHeader.get("x-grpc-test-echo-initial");
  if (initial !== null) ctx.responseHeader.set("x-grpc-test-echo-initial", initial);
  const trailing = ctx.requestHeader.get("x-grpc-test-echo-trailing-bin");
  if (trailing !== null) ctx.responseTrailer.set("x-grpc-test-echo-trailing-bin", trailing);
}

function fail(status: { code: number; message: string } | undefined): void {
  if (status && status.code !== 0) throw new ConnectError(status.message, status.code as Code);
}

/** What a test may observe of the service from inside. */
export interface TestingHooks {
  /** Called when UnaryCall starts running, with its request's text: a sync point ("the call is on the server now"). */
  readonly onUnaryStart?: (text: string) => void;
}

/** The TestingService registration. */
export function testingService(hooks: TestingHooks = {}): ServiceRegistration {
  return register(TestingService, {
    emptyCall: () => ({}),
    async unaryCall(req, ctx) {
      hooks.onUnaryStart?.(req.text);
      echoMetadata(ctx);
      if (req.sleepMs > 0) await sleep(req.sleepMs, undefined, { signal: ctx.signal });
      fail(req.responseStatus);
      return {
        payload: { body: new Uint8Array(req.responseSize) },
        echoedSize: req.payload?.body.length ?? 0,
        text: req.text,
        deadlineRemainingMs: BigInt(Math.max(0, Math.round(ctx.timeoutMs() ?? 0))),
      };
    },
    async *streamingOutputCall(req, ctx) {
      echoMetadata(ctx);
      for (const p of req.responseParameters) {
        if (p.intervalMs > 0) await sleep(p.intervalMs, undefined, { signal: ctx.signal });
        yield { payload: { body: new Uint8Array(p.size) } };
      }
      fail(req.responseStatus);
    },
    async streamingInputCall(reqs) {
      let total = 0;
      for await (const r of reqs) total += r.payload?.body.length ?? 0;
      return { aggregatedPayloadSize: total };
    },
    async *fullDuplexCall(reqs) {
      for await (const r of reqs) yield { payload: r.payload };
    },
    echoNested(req) {
      let depth = 0;
      for (let n: Nested | undefined = req.nested; n; n = n.child) depth++;
      return { depth };
    },
  });
}
