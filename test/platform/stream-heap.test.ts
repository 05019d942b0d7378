/**
 * A long-lived server stream keeps nothing per message it carried: the live
 * heap (after full GCs, in a child process run with --expose-gc) is the same
 * after 4n messages as after n, on both protocol paths. Before the fix in
 * middleware/lifecycle.ts each message left ~800 bytes behind until the
 * stream ended (about 12 MiB over the 15,000 messages between the two
 * measurements here).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);
const N = 5000;
/** Generous: a leak of even 140 bytes a message would exceed it, noise does not come near. */
const BOUND_BYTES = 2 * 1024 * 1024;

describe("a server stream's retained heap does not grow with its message count", () => {
  for (const protocol of ["grpc", "connect"]) {
    it(`over ${protocol}`, async () => {
      const { stdout } = await run(process.execPath, ["--expose-gc", "--import", "tsx", "test/platform/fixtures/stream-heap.ts", protocol, String(N)], {
        timeout: 120_000,
      });
      const { afterN, after4N } = JSON.parse(stdout.trim().split("\n").at(-1)!) as { afterN: number; after4N: number };
      const growth = after4N - afterN;
      assert.ok(growth < BOUND_BYTES, `live heap grew by ${growth} bytes over ${3 * N} more messages (${afterN} → ${after4N})`);
    });
  }
});
