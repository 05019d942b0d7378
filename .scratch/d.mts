import { startNatsCluster } from "../test/support/nats-cluster.js";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
const t0 = Date.now();
const log = (...a: unknown[]) => console.log(((Date.now() - t0) / 1000).toFixed(1), ...a);
const c = await startNatsCluster();
const { jsm } = await c.manager();
await jsm.streams.add({ name: "X", subjects: ["x.>"], num_replicas: 3 });
const nc = await connect({ servers: c.nodes.map((n) => n.url), maxReconnectAttempts: -1 });
const js = jetstream(nc, { timeout: 3000 });
const kv = await new Kvm(js).create("b", { replicas: 3, republish: { src: "$KV.b.>", dest: "rp.>" } });
let rp = 0;
nc.subscribe("rp.>", { callback: () => rp++ });
await kv.put("k", "1");
const l = await c.leaderOf("KV_b");
log("kv leader", l.name, "client on", nc.info?.server_name);
await l.kill();
for (let i = 0; i < 40; i++) {
  try { await kv.put("k", String(i)); const e = await kv.get("k"); log("put ok", i, "get", e?.string(), "rp", rp); break; } catch (e) { log("put fail", String(e)); }
  await new Promise((r) => setTimeout(r, 500));
}
await l.start();
await c.healed("KV_b"); await c.healed("X");
log("healed");
const l2 = await c.leaderOf("X");
log("X leader", l2.name, "client on", nc.info?.server_name);
await l2.kill();
for (let i = 0; i < 60; i++) {
  try { await js.publish("x.a", "hi"); log("publish ok", i); break; } catch (e) { log("pub fail", String(e)); }
  await new Promise((r) => setTimeout(r, 500));
}
await c.stop(); process.exit(0);
