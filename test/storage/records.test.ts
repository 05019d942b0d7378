/**
 * RecordService against a real PostgreSQL: who reaches what, etags, masks,
 * idempotency keys, label filters, page tokens, quotas, encryption at rest,
 * and bad input answered with the right code and nothing written.
 */
import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { RecordView } from "../../gen/switchyard/storage/v1/record_pb.js";
import { failure, startStorage, type StorageUnderTest, type TestUser } from "./support.js";

const mask = (...paths: string[]) => create(FieldMaskSchema, { paths });
const bytes = (s: string) => new TextEncoder().encode(s);

describe("RecordService", () => {
  let s: StorageUnderTest;
  let sql: postgres.Sql;
  let a: TestUser;
  let b: TestUser;
  const logs = new PassThrough();
  let logText = "";
  logs.on("data", (d: Buffer) => (logText += d.toString()));

  before(async () => {
    s = await startStorage({ storageEnv: { STORAGE_QUOTA_RECORDS: "5,100,100,100", STORAGE_QUOTA_BYTES: "3000000,1000000000,1000000000,1000000000" }, logTo: logs });
    sql = postgres(s.databaseUrl, { max: 2, onnotice: () => {} });
    a = await s.user("pro");
    b = await s.user("pro");
  });
  after(async () => {
    await sql.end();
    await s.stop();
  });

  const count = async (userId: string) => Number((await sql`select count(*)::int as n from storage.records where user_id = ${userId}`)[0]!.n);

  test("create, get, list, update, delete; another user gets NOT_FOUND by name, in lists, and naming the owner", async () => {
    const { record } = await a.records.createRecord({ record: { ciphertext: bytes("secret-a"), keyId: "k1", contentType: "text/plain", labels: { kind: "note" } } });
    assert.match(record!.name, new RegExp(`^users/${a.id}/records/`));
    assert.equal(record!.sizeBytes, 8n);
    assert.equal(record!.ciphertext.length, 0);
    const got = await a.records.getRecord({ name: record!.name });
    assert.equal(new TextDecoder().decode(got.record!.ciphertext), "secret-a");

    const byName = await failure(b.records.getRecord({ name: record!.name }));
    assert.equal(byName.code, Code.NotFound);
    const missing = await failure(b.records.getRecord({ name: `users/${a.id}/records/nope` }));
    assert.equal(missing.code, Code.NotFound);
    assert.equal(byName.rawMessage.replace(/records\/.*/, ""), missing.rawMessage.replace(/records\/.*/, ""), "existence is not revealed");
    assert.equal((await failure(b.records.listRecords({ parent: `users/${a.id}` }))).code, Code.NotFound);
    assert.equal((await failure(b.records.deleteRecord({ name: record!.name }))).code, Code.NotFound);
    assert.equal((await failure(b.records.updateRecord({ record: { name: record!.name, contentType: "x" }, updateMask: mask("content_type") }))).code, Code.NotFound);
    assert.equal((await failure(b.records.createRecord({ parent: `users/${a.id}`, record: { ciphertext: bytes("x"), keyId: "k" } }))).code, Code.NotFound);
    assert.equal((await b.records.listRecords({})).records.length, 0);

    const upd = await a.records.updateRecord({ record: { name: record!.name, labels: { kind: "todo" }, etag: record!.etag }, updateMask: mask("labels") });
    assert.deepEqual(upd.record!.labels, { kind: "todo" });
    assert.notEqual(upd.record!.etag, record!.etag);
    assert.equal(upd.record!.contentType, "text/plain", "fields outside the mask are kept");
    await a.records.deleteRecord({ name: record!.name, etag: upd.record!.etag });
    assert.equal((await failure(a.records.getRecord({ name: record!.name }))).code, Code.NotFound);
    await a.records.deleteRecord({ name: record!.name, allowMissing: true });
  });

  test("a service token acts only for the user its request names, and must name one", async () => {
    const svc = await s.service("chat");
    const { record } = await svc.records.createRecord({ parent: `users/${a.id}`, record: { ciphertext: bytes("via-service"), keyId: "k" } });
    assert.equal(record!.userId, a.id);
    const listedForB = await svc.records.listRecords({ parent: `users/${b.id}` });
    assert.ok(!listedForB.records.some((r) => r.name === record!.name));
    assert.equal((await failure(svc.records.listRecords({}))).code, Code.InvalidArgument);
    assert.match((await failure(svc.records.createRecord({ record: { ciphertext: bytes("x"), keyId: "k" } }))).rawMessage, /a service must name the user/);
    await a.records.deleteRecord({ name: record!.name });
  });

  test("stored bytes never hold the plaintext; bytes copied onto another row fail to decrypt, leak nothing, and are logged", async () => {
    const plaintext = "PLAINTEXT-MARKER-0123456789";
    const one = (await a.records.createRecord({ record: { ciphertext: bytes(plaintext), keyId: "k" } })).record!;
    const two = (await a.records.createRecord({ record: { ciphertext: bytes("other"), keyId: "k" } })).record!;
    const rows = await sql<{ body: Buffer; wrapped_key: Buffer }[]>`select body, wrapped_key from storage.records where user_id = ${a.id}`;
    for (const r of rows) assert.ok(!r.body.includes(Buffer.from(plaintext)) && !r.wrapped_key.includes(Buffer.from(plaintext)));
    await sql`
      update storage.records t set body = f.body, wrapped_key = f.wrapped_key, kek_id = f.kek_id
      from storage.records f where f.user_id = ${a.id} and f.record_id = ${one.recordId} and t.user_id = ${a.id} and t.record_id = ${two.recordId}`;
    const err = await failure(a.records.getRecord({ name: two.name }));
    assert.equal(err.code, Code.DataLoss);
    assert.ok(!err.rawMessage.includes(plaintext) && !err.rawMessage.includes(s.masterKey));
    assert.match(logText, new RegExp(`failed their integrity check.*|${two.recordId}`));
    assert.ok(logText.includes(two.recordId));
    assert.ok(!logText.includes(s.masterKey));
    await a.records.deleteRecord({ name: one.name });
    await a.records.deleteRecord({ name: two.name });
  });

  test("concurrent updates with the same etag: exactly one wins, the others answer ABORTED", async () => {
    const r = (await a.records.createRecord({ record: { ciphertext: bytes("v0"), keyId: "k" } })).record!;
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => a.records.updateRecord({ record: { name: r.name, ciphertext: bytes(`v${i + 1}`), etag: r.etag }, updateMask: mask("ciphertext") })),
    );
    const won = results.filter((x) => x.status === "fulfilled");
    assert.equal(won.length, 1);
    for (const x of results) if (x.status === "rejected") assert.equal((await failure(Promise.reject(x.reason))).code, Code.Aborted);
    const stale = await failure(a.records.deleteRecord({ name: r.name, etag: r.etag }));
    assert.equal(stale.code, Code.Aborted);
    await a.records.deleteRecord({ name: r.name });
  });

  test("idempotency keys: a retry returns the first record; another request with the key is ALREADY_EXISTS; racing retries make one", async () => {
    const req = { record: { ciphertext: bytes("once"), keyId: "k" }, idempotencyKey: "key-1" };
    const [x, y] = await Promise.all([a.records.createRecord(req), a.records.createRecord(req)]);
    assert.equal(x.record!.name, y.record!.name);
    const again = await a.records.createRecord(req);
    assert.equal(again.record!.name, x.record!.name);
    assert.equal((await failure(a.records.createRecord({ ...req, record: { ciphertext: bytes("twice"), keyId: "k" } }))).code, Code.AlreadyExists);
    const otherUser = await b.records.createRecord(req);
    assert.notEqual(otherUser.record!.name, x.record!.name, "keys are per user");
    await a.records.deleteRecord({ name: x.record!.name });
    await b.records.deleteRecord({ name: otherUser.record!.name });
  });

  test("label filters and page tokens bound to their query and caller", async () => {
    const u = await s.user("pro");
    for (let i = 0; i < 7; i++) await u.records.createRecord({ record: { ciphertext: bytes(`r${i}`), keyId: "k", labels: { parity: i % 2 ? "odd" : "even", n: String(i) } } });
    const odd = await u.records.listRecords({ labels: { parity: "odd" } });
    assert.deepEqual(odd.records.map((r) => r.labels.n).sort(), ["1", "3", "5"]);
    const seen: string[] = [];
    let token = "";
    do {
      const page = await u.records.listRecords({ pageSize: 3, pageToken: token, view: RecordView.FULL });
      seen.push(...page.records.map((r) => new TextDecoder().decode(r.ciphertext)));
      token = page.nextPageToken;
    } while (token !== "");
    assert.deepEqual(seen, ["r6", "r5", "r4", "r3", "r2", "r1", "r0"], "newest first, each once");
    const first = await u.records.listRecords({ pageSize: 2 });
    assert.equal((await failure(u.records.listRecords({ pageSize: 2, pageToken: first.nextPageToken, labels: { parity: "odd" } }))).code, Code.InvalidArgument);
    const v = await s.user("pro");
    const foreign = await failure(v.records.listRecords({ pageSize: 2, pageToken: first.nextPageToken }));
    assert.equal(foreign.code, Code.InvalidArgument);
    assert.match(foreign.rawMessage, /page_token/);
    assert.equal((await failure(u.records.listRecords({ pageToken: "garbage" }))).code, Code.InvalidArgument);
  });

  test("tier quotas on count and bytes: RESOURCE_EXHAUSTED and nothing written", async () => {
    const f = await s.user("free");
    for (let i = 0; i < 5; i++) await f.records.createRecord({ record: { ciphertext: bytes("x"), keyId: "k" } });
    const over = await failure(f.records.createRecord({ record: { ciphertext: bytes("x"), keyId: "k" } }));
    assert.equal(over.code, Code.ResourceExhausted);
    assert.match(over.rawMessage, /free tier's quota of 5/);
    assert.equal(await count(f.id), 5);
    const g = await s.user("free");
    const big = new Uint8Array(1024 * 1024);
    await g.records.createRecord({ record: { ciphertext: big, keyId: "k" } });
    await g.records.createRecord({ record: { ciphertext: big, keyId: "k" } });
    assert.equal((await failure(g.records.createRecord({ record: { ciphertext: big, keyId: "k" } }))).code, Code.ResourceExhausted);
    assert.equal(await count(g.id), 2);
  });

  test("bad input: the right code, a message naming the problem, nothing written", async () => {
    const u = await s.user("pro");
    const r = (await u.records.createRecord({ record: { ciphertext: bytes("v"), keyId: "k" } })).record!;
    const cases: [string, () => Promise<unknown>, Code][] = [
      ["over 1 MiB", () => u.records.createRecord({ record: { ciphertext: new Uint8Array(1024 * 1024 + 1), keyId: "k" } }), Code.InvalidArgument],
      ["65 labels", () => u.records.createRecord({ record: { ciphertext: bytes("v"), keyId: "k", labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`l${i}`, "v"])) } }), Code.InvalidArgument],
      ["a bad label key", () => u.records.createRecord({ record: { ciphertext: bytes("v"), keyId: "k", labels: { "Bad Key": "v" } } }), Code.InvalidArgument],
      ["no key_id", () => u.records.createRecord({ record: { ciphertext: bytes("v") } }), Code.InvalidArgument],
      ["a name with ..", () => u.records.getRecord({ name: `users/${u.id}/records/../x` }), Code.InvalidArgument],
      ["a parent with ..", () => u.records.createRecord({ parent: `users/../${u.id}`, record: { ciphertext: bytes("v"), keyId: "k" } }), Code.InvalidArgument],
      ["another user's id", () => u.records.createRecord({ parent: `users/${a.id}`, record: { ciphertext: bytes("v"), keyId: "k" } }), Code.NotFound],
      ["a stale etag", () => u.records.updateRecord({ record: { name: r.name, contentType: "x", etag: "stale" }, updateMask: mask("content_type") }), Code.Aborted],
      ["a mask naming an output-only field", () => u.records.updateRecord({ record: { name: r.name, etag: r.etag }, updateMask: mask("etag") }), Code.InvalidArgument],
      ["an empty mask", () => u.records.updateRecord({ record: { name: r.name }, updateMask: mask() }), Code.InvalidArgument],
    ];
    for (const [what, call, code] of cases) {
      const err = await failure(call());
      assert.equal(err.code, code, `${what}: ${err.message}`);
      assert.ok(err.rawMessage.length > 10, what);
    }
    assert.equal(await count(u.id), 1);
    const still = await u.records.getRecord({ name: r.name });
    assert.equal(still.record!.etag, r.etag);
  });
});
