/**
 * The per-user rate limit is one budget across processes: two separate
 * processes share it, the call over it answers RESOURCE_EXHAUSTED with a
 * RetryInfo detail saying when to retry, other users and higher tiers have
 * their own budgets, and calls without a principal are not counted. A burst
 * spread over both processes is admitted within the limiter's stated
 * accuracy (platform/limits/leases.ts): never over the limit, and short of
 * it by at most (N − 1) · 2k requests, k being the lease size.
 */
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Tier } from "../../gen/switchyard/common/v1/tier_pb.js";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { leaseSize } from "../../platform/limits/leases.js";
import { spawnLedger, type LedgerProcess } from "./helpers.js";

let nats: OwnNats;
let dbHandle: { url: string; drop(): Promise<void> };
let procs: LedgerProcess[] = [];
let clients: Client<typeof TestingService>[] = [];
const TEAM_LIMIT = 100;

before(async () => {
  nats = await startNats();
  dbHandle = await createTestDatabase("sy_ratelimit");
  const env = { DATABASE_URL: dbHandle.url, NATS_URL: nats.url, RATE_LIMIT_FREE: "4", RATE_LIMIT_PRO: "8", RATE_LIMIT_TEAM: String(TEAM_LIMIT) };
  // One first, so the second finds the schema migrated (both would be fine; this keeps start quick).
  procs.push(await spawnLedger(env));
  procs.push(await spawnLedger(env));
  clients = procs.map((p) => createClient(TestingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${p.port}` })));
});

after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await dbHandle?.drop();
  await nats?.kill();
});

const as = (user: string, tier = Tier.FREE) => ({ headers: { "x-test-user": user, "x-test-tier": String(tier) }, timeoutMs: 5000 });

async function refused(call: Promise<unknown>): Promise<ConnectError> {
  const err = await call.then(
    () => assert.fail("expected RESOURCE_EXHAUSTED"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ConnectError, String(err));
  assert.equal(err.code, Code.ResourceExhausted);
  return err;
}

test("two processes share one per-user limit; the refusal carries RetryInfo", async () => {
  const [a, b] = clients as [Client<typeof TestingService>, Client<typeof TestingService>];
  // Free tier: 4 per minute, alternating between the processes.
  for (let i = 0; i < 4; i++) await (i % 2 === 0 ? a : b).unaryCall({ text: `alice ${i}` }, as("alice"));
  for (const c of [a, b]) {
    const err = await refused(c.unaryCall({ text: "alice over" }, as("alice")));
    assert.match(err.message, /rate limit exceeded: the free tier allows 4 requests per minute; retry in \d+\.\d s/);
    const [info] = err.findDetails(RetryInfoSchema);
    assert.ok(info?.retryDelay, "a RetryInfo detail with a retry delay");
    const ms = Number(info.retryDelay.seconds) * 1000 + info.retryDelay.nanos / 1e6;
    // One request's worth of budget (60 s / 4) returns within 15 s.
    assert.ok(ms > 0 && ms <= 15_000, `retry delay ${ms} ms`);
  }

  // Another user has a budget of their own; a pro user a larger one.
  await b.unaryCall({ text: "bob" }, as("bob"));
  for (let i = 0; i < 8; i++) await (i % 2 === 0 ? b : a).unaryCall({ text: `carol ${i}` }, as("carol", Tier.PRO));
  const err = await refused(a.unaryCall({ text: "carol over" }, as("carol", Tier.PRO)));
  assert.match(err.message, /the pro tier allows 8 requests per minute/);

  // No principal (a public call without a token): not counted.
  for (let i = 0; i < 10; i++) await a.unaryCall({ text: `anonymous ${i}` }, { timeoutMs: 5000 });
});

test("a burst spread over both processes: never over the limit, short of it by at most (N − 1) · 2k", async () => {
  const k = leaseSize(TEAM_LIMIT);
  assert.ok(k > 1, "the team limit is large enough for leases of several requests");
  const calls = Math.round(TEAM_LIMIT * 1.5);
  let admitted = 0;
  let refusedCalls = 0;
  let next = 0;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < calls) {
        const i = next++;
        await clients[i % clients.length]!.unaryCall({ text: `dave ${i}` }, as("dave", Tier.TEAM)).then(
          () => admitted++,
          (e: unknown) => {
            assert.ok(e instanceof ConnectError && e.code === Code.ResourceExhausted, String(e));
            refusedCalls++;
          },
        );
      }
    }),
  );
  const elapsedMin = (Date.now() - started) / 60_000;
  // GCRA refills L per minute while the burst runs.
  const ceiling = TEAM_LIMIT + Math.ceil(elapsedMin * TEAM_LIMIT);
  const floor = TEAM_LIMIT - (clients.length - 1) * 2 * k;
  assert.equal(admitted + refusedCalls, calls);
  assert.ok(admitted <= ceiling, `admitted ${admitted} of a limit of ${TEAM_LIMIT} (at most ${ceiling} with refill)`);
  assert.ok(admitted >= floor, `admitted ${admitted}: more than (N − 1) · 2k = ${TEAM_LIMIT - floor} short of ${TEAM_LIMIT}`);
});
