/**
 * Steady unary traffic for fault tests: `callers` loops calling UnaryCall
 * until stopped, counting outcomes by gRPC code ("ok" for successes), so a
 * test can assert which codes a fault produced.
 */
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";

/** Running traffic: its outcome counts so far, and a stop that waits for every caller. */
export interface Traffic {
  readonly codes: Map<string, number>;
  /** How many calls succeeded so far. */
  ok(): number;
  stop(): Promise<void>;
}

/** Starts `callers` loops of UnaryCall (3 s deadline each; a failed call backs off 20 ms). */
export function startTraffic(client: Client<typeof TestingService>, callers: number): Traffic {
  let running = true;
  const codes = new Map<string, number>();
  const count = (code: string) => codes.set(code, (codes.get(code) ?? 0) + 1);
  const loops = Array.from({ length: callers }, async (_, k) => {
    for (let i = 0; running; i++) {
      try {
        await client.unaryCall({ text: `load ${k}.${i}` }, { timeoutMs: 3000 });
        count("ok");
      } catch (err) {
        count(err instanceof ConnectError ? Code[err.code] : String(err));
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  });
  return {
    codes,
    ok: () => codes.get("ok") ?? 0,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}
