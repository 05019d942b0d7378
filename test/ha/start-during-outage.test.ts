/**
 * A gateway starting while JetStream cannot answer (two of three nodes
 * down: no quorum, no stream can be declared) does not crash: it serves
 * after its declaration budget with /readyz false naming each stream and
 * bucket it waits for, answers RPCs that need them UNAVAILABLE, keeps
 * retrying, and turns ready by itself once the nodes are back.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { gatewayNames } from "../../gateway/subjects.js";
import { eventually, newPrefix, newUser, rpcClients, startTestKeys, type TestKeys } from "../gateway/support.js";
import { startNatsCluster, type NatsCluster } from "../support/nats-cluster.js";
import { spawnPlatform, type PlatformProcess } from "../support/spawn.js";

// Several mesh processes start at once here; on a loaded 2-core machine that can take longer than the default 30 s.
process.env.SPAWN_READY_TIMEOUT_MS ??= "120000";

let cluster: NatsCluster;
let keys: TestKeys;
let gw: PlatformProcess | undefined;

before(async () => {
  [cluster, keys] = await Promise.all([startNatsCluster(3), startTestKeys()]);
});

after(async () => {
  await gw?.stop("SIGKILL");
  await keys?.close();
  await cluster?.stop();
});

type Readyz = { ready: boolean; checks: Record<string, boolean> };
const readyz = (p: PlatformProcess) => fetch(`${p.baseUrl}/readyz`).then(async (r) => ({ status: r.status, body: (await r.json()) as Readyz }));

test("started with JetStream unavailable: serves with /readyz false naming what it waits for, UNAVAILABLE meanwhile, ready once the nodes return", async () => {
  const [n1, n2, n3] = cluster.nodes;
  await Promise.all([n2!.kill(), n3!.kill()]);
  const prefix = newPrefix();
  const names = gatewayNames(prefix);
  gw = await spawnPlatform({
    until: "serving",
    timeoutMs: 60_000,
    env: {
      SERVICES: "gateway",
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      INSTANCE_ID: `gw-${randomBytes(3).toString("hex")}`,
      NATS_URL: n1!.url,
      NATS_REPLICAS: "3",
      NATS_DECLARE_BUDGET_MS: "1500",
      AUTH_JWKS_URL: keys.jwksUrl,
      GATEWAY_NATS_PREFIX: prefix,
    },
  });
  const down = await readyz(gw);
  assert.equal(down.status, 503);
  assert.equal(down.body.checks[`jetstream ${names.callStream}`], false, `names the tool-call stream: ${JSON.stringify(down.body.checks)}`);
  assert.equal(down.body.checks[`jetstream KV_${names.devicesBucket}`], false, "names the presence bucket");
  assert.equal(down.body.checks.nats, true, "NATS itself is reachable");
  await eventually(() => /not declared within the start budget/.test(gw!.output()), 10_000, "the log to say what it waits for"); // logs flush each second

  const notifier = rpcClients(gw.baseUrl, await keys.mint("notifier", { roles: ["service"] }));
  await assert.rejects(
    notifier.notify.publish({ userId: newUser(), title: "during" }, { timeoutMs: 15_000 }),
    (err: unknown) => ConnectError.from(err).code === Code.Unavailable,
  );

  await Promise.all([n2!.start(), n3!.start()]);
  await eventually(async () => (await readyz(gw!)).status === 200, 90_000, "/readyz to turn true once the nodes are back");
  const sent = await notifier.notify.publish({ userId: newUser(), title: "after" }, { timeoutMs: 15_000 });
  assert.ok(sent.notification, "publishing works");
  const { jsm } = await cluster.manager();
  assert.equal((await jsm.streams.info(names.notifyStream)).config.num_replicas, 3, "declared R3 once it could be");
});
