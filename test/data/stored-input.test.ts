/**
 * Bad input in a field that is stored: through an RPC that writes it to
 * PostgreSQL and publishes an event in the same transaction, a NUL character
 * or a string over 65536 characters answers INVALID_ARGUMENT naming the field
 * (on the gRPC and Connect paths alike), and nothing is written, neither the
 * row nor its event; the largest allowed string is stored intact.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import postgres from "postgres";
import { TestingService } from "../../gen/switchyard/testing/v1/testing_pb.js";
import { startProcess, type RunningProcess } from "../../platform/process.js";
import { createTestDatabase, startNats, type OwnNats } from "../support/infra.js";
import { testSettings } from "./helpers.js";
import { ledgerModule } from "./fixtures/ledger.js";

let nats: OwnNats;
let dbHandle: { url: string; drop(): Promise<void> };
let proc: RunningProcess;

before(async () => {
  nats = await startNats();
  dbHandle = await createTestDatabase("sy_stored");
  proc = await startProcess([ledgerModule()], testSettings({ DATABASE_URL: dbHandle.url, NATS_URL: nats.url }));
});

after(async () => {
  await proc?.stop();
  await dbHandle?.drop();
  await nats?.kill();
});

test("a NUL byte or an oversize string in a stored field answers INVALID_ARGUMENT and writes nothing", async () => {
  const baseUrl = `http://127.0.0.1:${proc.port}`;
  const clients = [
    createClient(TestingService, createGrpcTransport({ baseUrl })),
    createClient(TestingService, createConnectTransport({ baseUrl, httpVersion: "1.1" })),
  ];
  const sql = postgres(dbHandle.url, { max: 1, onnotice: () => {} });
  try {
    const counts = async () => (await sql`select (select count(*)::int from ledger.entries) as entries, (select count(*)::int from platform.outbox) as events`)[0];
    const before = await counts();
    for (const client of clients) {
      for (const [text, reason] of [
        ["before\0after", "text: must not contain a NUL character"],
        ["x".repeat(65_537), "text: must be at most 65536 characters, got 65537"],
      ] as const) {
        await assert.rejects(
          client.unaryCall({ text }, { timeoutMs: 5000 }),
          (err: unknown) => err instanceof ConnectError && err.code === Code.InvalidArgument && err.rawMessage === reason,
        );
      }
    }
    assert.deepEqual(await counts(), before, "no row and no event written");

    const largest = "é".repeat(65_536);
    assert.equal((await clients[0]!.unaryCall({ text: largest }, { timeoutMs: 5000 })).text, largest);
    const [row] = await sql`select text from ledger.entries order by id desc limit 1`;
    assert.equal(row!.text, largest);
  } finally {
    await sql.end();
  }
});
