/**
 * High availability on a real 3-node nats-server JetStream cluster with
 * NATS_REPLICAS=3 and NATS_URL listing the three servers, with three mesh
 * processes (gateways A and B, auth C) and a fourth started mid-outage.
 * SIGKILL of the node leading a stream costs at most its leader election:
 * tool calls, presence and events work again while that node stays down; no
 * call hangs past its deadline or runs twice; no event is lost or
 * duplicated; the node restarts on its store and rejoins.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { UserRegisteredSchema } from "../../gen/switchyard/events/v1/events_pb.js";
import { eventStreams, EVENTS_STREAM } from "../../platform/events/streams.js";
import { eventSubject } from "../../platform/events/subject.js";
import { createLogger } from "../../platform/log.js";
import { declareStream } from "../../platform/nats/declare.js";
import { gatewayNames } from "../../gateway/subjects.js";
import {
  connectDevice,
  eventually,
  newPrefix,
  newUser,
  rpcClients,
  startGateway,
  startTestKeys,
  type GatewayProcess,
  type TestDevice,
  type TestKeys,
} from "../gateway/support.js";
import { createTestDatabase } from "../support/infra.js";
import { startNatsCluster, type ClusterNode, type NatsCluster } from "../support/nats-cluster.js";
import { spawnPlatform, type PlatformProcess } from "../support/spawn.js";

const CALL_TIMEOUT_MS = 2000;
/** How late after its deadline a call may end: the server's own answer, not the client's deadline (generous: a loaded 2-core machine). */
const SLACK_MS = 3000;
/** The bound for calls, presence and events to work again after a node is killed. */
const RECOVERY_MS = 10_000;
/**
 * What the mesh may add to the server's own leader elections before calls
 * flow again (a gateway's next beat, a failed caller's back-off). The
 * elections alone can pass RECOVERY_MS: nats-server 2.9 draws each stream's
 * election timeout between 4 and 9 s, and a killed node leads several.
 */
const AFTER_ELECTION_MS = 3000;
const OPERATOR_MAX_AGE_DAYS = 3;

// Several mesh processes start at once here; on a loaded 2-core machine that can take longer than the default 30 s.
process.env.SPAWN_READY_TIMEOUT_MS ??= "120000";

let cluster: NatsCluster;
let keys: TestKeys;
let db: { url: string; drop(): Promise<void> };
let a: GatewayProcess, b: GatewayProcess;
let c: PlatformProcess;
let late: GatewayProcess | undefined;
let device: TestDevice | undefined;
const prefix = newPrefix();
const names = gatewayNames(prefix);
const user = newUser();
/** How many times the device ran each call id. */
const runs = new Map<string, number>();

before(async () => {
  cluster = await startNatsCluster(3);
  // An operator created EVENTS before the mesh, R3 and with a shorter retention of their own.
  const { jsm } = await cluster.manager();
  await jsm.streams.add({
    name: EVENTS_STREAM,
    subjects: ["events.>"],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(OPERATOR_MAX_AGE_DAYS * 24 * 3600_000),
    num_replicas: 3,
  });
  keys = await startTestKeys();
  db = await createTestDatabase("sy_ha");
  const natsEnv = { NATS_URL: cluster.url, NATS_REPLICAS: "3" };
  const gatewayEnv = { ...natsEnv, AUTH_JWKS_URL: keys.jwksUrl, GATEWAY_NATS_PREFIX: prefix, GATEWAY_HEARTBEAT_MS: "3000" };
  [a, b, c] = await Promise.all([
    startGateway(gatewayEnv),
    startGateway(gatewayEnv),
    spawnPlatform({
      timeoutMs: 60_000,
      env: {
        ...natsEnv,
        SERVICES: "auth",
        HOST: "127.0.0.1",
        LOG_LEVEL: "warn",
        SHUTDOWN_GRACE_MS: "1000",
        DATABASE_URL: db.url,
        AUTH_MASTER_KEY: randomBytes(32).toString("base64"),
        AUTH_REGISTER_MAX_PER_ADDRESS: "100000",
        AUTH_ARGON2_MEMORY_KIB: "19456",
        RATE_LIMIT_ENABLED: "false",
      },
    }),
  ]);
  device = await connectDevice(b.port, {
    token: await keys.mint(user),
    deviceId: "steady",
    onCall: (call) => {
      runs.set(call.callId, (runs.get(call.callId) ?? 0) + 1);
      return { ok: call.callId };
    },
  });
});

after(async () => {
  device?.ws.terminate();
  await Promise.all([a, b, late].map((g) => g?.kill("SIGKILL")));
  await c?.stop("SIGKILL");
  await keys?.close();
  await cluster?.stop();
  await db?.drop();
});

test("with NATS_REPLICAS=3 every stream and bucket is R3, and the operator's R3 EVENTS keeps its settings", async () => {
  const { jsm } = await cluster.manager();
  const wanted = [
    EVENTS_STREAM,
    "EVENTS_DLQ",
    names.callStream,
    names.resultStream,
    names.notifyStream,
    `KV_${names.devicesBucket}`,
    `KV_${names.gatewaysBucket}`,
    `KV_${names.ticketsBucket}`,
  ];
  for (const name of wanted) {
    const info = await jsm.streams.info(name);
    assert.equal(info.config.num_replicas, 3, `${name} is R3`);
  }
  const events = await jsm.streams.info(EVENTS_STREAM);
  assert.equal(events.config.max_age, nanos(OPERATOR_MAX_AGE_DAYS * 24 * 3600_000), "the operator's retention is kept");
  // A process configured for R1 (NATS_REPLICAS unset) never scales it down.
  await declareStream(jsm, eventStreams()[0]!, 1, createLogger("silent"));
  assert.equal((await jsm.streams.info(EVENTS_STREAM)).config.num_replicas, 3, "still R3 after a declaration with replicas 1");
});

test("SIGKILL of the node leading the tool-call stream: calls succeed again while it is down, none hangs or runs twice", async () => {
  await withOutputs(() => killLeaderUnderCalls(names.callStream));
});

test("SIGKILL of the node leading the presence bucket: calls and device connections work again while it is down", async () => {
  const killed = await withOutputs(() => killLeaderUnderCalls(`KV_${names.devicesBucket}`, async () => {
    // Presence is written too: a second device of the user connects and is listed while the node is down.
    const other = await eventuallyValue(RECOVERY_MS * 2, "a device to connect while the presence leader is down", async () => {
      const d = await connectDevice(a.port, { token: await keys.mint(user), deviceId: "second", onCall: () => ({ ok: true }) }).catch(() => undefined);
      if (d?.frames.some((f) => f.frame.case === "welcome")) return d;
      d?.ws.terminate(); // refused (e.g. presence unreachable during the election): try again
      return undefined;
    });
    const agent = rpcClients(a.baseUrl, await keys.mint("agent-runner", { roles: ["service"] }));
    await eventually(
      async () => (await agent.devices.listDevices({ userId: user }).catch(() => ({ devices: [] }))).devices.some((d) => d.deviceId === "second"),
      RECOVERY_MS * 2,
      "the second device to be listed",
    );
    other.ws.close();
  }));
  assert.ok(killed.running(), "the killed node is back");
});

test("SIGKILL of the node leading EVENTS while users register: events reach JetStream while it is down, none lost or duplicated; a new process starts on the surviving nodes and serves", () =>
  withOutputs(registerThroughEventsLeaderKill));

async function registerThroughEventsLeaderKill(): Promise<void> {
  const { jsm } = await cluster.manager();
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: c.baseUrl }));
  const registered: { email: string; at: number }[] = [];
  let failures = 0;
  let stop = false;
  const registering = (async () => {
    for (let i = 0; !stop; i++) {
      const email = `ha-${randomBytes(4).toString("hex")}-${i}@example.com`;
      try {
        await auth.register({ email, password: "correct horse battery" }, { timeoutMs: 15_000 });
        registered.push({ email, at: Date.now() });
      } catch (err) {
        failures++;
        assert.ok([Code.Unavailable, Code.DeadlineExceeded].includes(ConnectError.from(err).code), `register failed cleanly: ${String(err)}`);
      }
      await new Promise((r) => setTimeout(r, 300)); // about 3 registrations per second (pacing, not synchronisation)
    }
  })();
  try {
    await eventually(async () => (await eventsInStream(jsm)).size >= 3, 30_000, "registrations to reach EVENTS before the kill");
    const leader = await cluster.leaderOf(EVENTS_STREAM);
    await leader.kill("SIGKILL");
    const killedAt = Date.now();
    // Events of users registered after the kill reach the stream while the node is down.
    await eventually(
      async () => {
        const seen = await eventsInStream(jsm).catch(() => new Map<string, number>());
        return registered.filter((r) => r.at > killedAt && seen.has(r.email)).length >= 3;
      },
      RECOVERY_MS * 3,
      "events of users registered after the kill to reach EVENTS while its old leader is down",
    );
    assert.ok(!leader.running(), "the node is still down");

    // A new gateway, pointed at the surviving nodes only, starts and serves a call to the device on B.
    late = await startGateway({
      NATS_URL: cluster.urlWithout(leader),
      NATS_REPLICAS: "3",
      AUTH_JWKS_URL: keys.jwksUrl,
      GATEWAY_NATS_PREFIX: prefix,
      GATEWAY_HEARTBEAT_MS: "3000",
    });
    const viaLate = rpcClients(late.baseUrl, await keys.mint("agent-runner", { roles: ["service"] }));
    const answer = await eventuallyValue(RECOVERY_MS * 2, "a call through the new instance", () =>
      viaLate.devices
        .callTool({ userId: user, tool: "echo", callId: `late-${randomBytes(4).toString("hex")}`, timeout: { nanos: CALL_TIMEOUT_MS * 1e6 } })
        .catch(() => undefined),
    );
    assert.equal(answer.outcome.case, "result", "the new instance served the call");
    assert.ok(!leader.running(), "all of it while the node was down");

    await leader.start();
    await cluster.healed(EVENTS_STREAM);
  } finally {
    stop = true;
    await registering;
    for (const n of cluster.nodes) await n.start(); // never leave the cluster a node short
  }
  // Nothing lost, nothing twice: every registered user's event is in EVENTS exactly once.
  let seen = new Map<string, number>();
  await eventually(
    async () => {
      seen = await eventsInStream(jsm);
      return registered.every((r) => seen.has(r.email));
    },
    60_000,
    "every registered user's event in EVENTS",
  );
  for (const r of registered) assert.equal(seen.get(r.email), 1, `${r.email}: one event`);
  assert.ok(registered.length > 0 && failures <= registered.length, `registrations mostly succeed (${registered.length} ok, ${failures} failed)`);
}

/** Runs `fn`; a failure carries the end of every mesh process's output, for diagnosis. */
async function withOutputs<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const tails = [["A", a], ["B", b], ["C", c], ["late", late]]
      .filter(([, p]) => p !== undefined)
      .map(([name, p]) => `--- ${name as string}:\n${(p as { output(): string }).output().slice(-3000)}`);
    throw new Error(`${(err as Error).message}\n${tails.join("\n")}`, { cause: err });
  }
}

/**
 * Calls flow from A to the device on B (4 callers); the leader of `stream`
 * is killed; calls must succeed again within RECOVERY_MS, or within
 * AFTER_ELECTION_MS of the call path's elections when those take longer, while it
 * stays down, then `whileDown` runs, then the node restarts and rejoins.
 * Afterwards: every failure clean, none past its deadline, none run twice.
 */
async function killLeaderUnderCalls(stream: string, whileDown?: () => Promise<void>): Promise<ClusterNode> {
  const agent = rpcClients(a.baseUrl, await keys.mint("agent-runner", { roles: ["service"] }));
  const outcomes: { ok: boolean; code?: Code; ms: number; at: number }[] = [];
  let stop = false;
  let n = 0;
  const tag = randomBytes(3).toString("hex");
  const worker = async () => {
    while (!stop) {
      const callId = `c${tag}-${n++}`;
      const t0 = Date.now();
      try {
        await agent.devices.callTool({ userId: user, tool: "echo", callId, timeout: { nanos: CALL_TIMEOUT_MS * 1e6 } }, { timeoutMs: CALL_TIMEOUT_MS + 15_000 });
        outcomes.push({ ok: true, ms: Date.now() - t0, at: Date.now() });
      } catch (err) {
        outcomes.push({ ok: false, code: ConnectError.from(err).code, ms: Date.now() - t0, at: Date.now() });
        await new Promise((r) => setTimeout(r, 50)); // a failing caller backs off a little
      }
    }
  };
  const workers = Array.from({ length: 4 }, worker);
  let leader: ClusterNode | undefined;
  try {
    await eventually(() => outcomes.filter((o) => o.ok).length >= 20, 30_000, "calls to flow before the kill");
    leader = await cluster.leaderOf(stream);
    const elections = await cluster.watchElections(leader, callPathStreams);
    await leader.kill("SIGKILL");
    const killedAt = Date.now();
    const succeededSinceKill = () => outcomes.filter((o) => o.ok && o.at - o.ms > killedAt);
    try {
      await eventually(() => succeededSinceKill().length >= 10, RECOVERY_MS * 3, `calls started after the kill to succeed (leader of ${stream} down)`);
      const recoveredMs = succeededSinceKill()[9]!.at - killedAt;
      const electedMs = (await elections.elected) - killedAt;
      assert.ok(
        recoveredMs <= Math.max(RECOVERY_MS, electedMs + AFTER_ELECTION_MS),
        `calls flowed again ${recoveredMs} ms after the kill; the elections of ${elections.led.join(", ") || "no stream"} took ${electedMs} ms`,
      );
    } finally {
      await elections.close();
    }
    await whileDown?.();
    assert.ok(!leader.running(), "the node stayed down meanwhile");
    await leader.start();
    await cluster.healed(stream);
    const rejoinedAt = Date.now();
    await eventually(() => outcomes.filter((o) => o.ok && o.at > rejoinedAt).length >= 10, 30_000, "calls to flow after the node rejoined");
  } finally {
    stop = true;
    await Promise.all(workers);
    await leader?.start(); // never leave the cluster a node short for the next test
  }
  for (const f of outcomes.filter((o) => !o.ok)) {
    assert.ok(f.code === Code.Unavailable || f.code === Code.DeadlineExceeded, `clean failure code, got ${Code[f.code!]}`);
  }
  for (const o of outcomes) assert.ok(o.ms <= CALL_TIMEOUT_MS + SLACK_MS, `a call took ${o.ms} ms, past its ${CALL_TIMEOUT_MS} ms deadline`);
  for (const [callId, count] of runs) assert.equal(count, 1, `call ${callId} ran ${count} times`);
  return leader!;
}

/** The streams a call from A to a device on B goes through: calls, results, presence and instance beats. */
const callPathStreams = [names.callStream, names.resultStream, `KV_${names.devicesBucket}`, `KV_${names.gatewaysBucket}`];

/** The UserRegistered events in EVENTS, counted by email. */
async function eventsInStream(jsm: JetStreamManager): Promise<Map<string, number>> {
  const subject = eventSubject(UserRegisteredSchema);
  const info = await jsm.streams.info(EVENTS_STREAM);
  const seen = new Map<string, number>();
  for (let seq = info.state.first_seq; seq > 0 && seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(EVENTS_STREAM, { seq }).catch(() => null);
    if (m === null || m.subject !== subject) continue;
    const e = fromBinary(UserRegisteredSchema, m.data);
    seen.set(e.email, (seen.get(e.email) ?? 0) + 1);
  }
  return seen;
}

/** Polls `probe` until it gives a value; throws naming `what` after `ms`. */
async function eventuallyValue<T>(ms: number, what: string, probe: () => Promise<T | undefined>): Promise<T> {
  let value: T | undefined;
  await eventually(async () => (value = await probe()) !== undefined, ms, what);
  return value!;
}
