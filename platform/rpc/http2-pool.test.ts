import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, test } from "node:test";
import { waitFor } from "../../test/support/wait.js";
import { createSessionPool } from "./http2-pool.js";

/** An h2c server on `host:port` answering each request with the address it listens on. */
async function startServer(host: string, port = 0): Promise<{ port: number; server: http2.Http2Server; sessions: Set<http2.ServerHttp2Session> }> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => sessions.add(s).size);
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200 });
    stream.end(host);
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return { port: (server.address() as AddressInfo).port, server, sessions };
}

/** Which server answered a request on the pool's next session. */
async function ask(pool: ReturnType<typeof createSessionPool>): Promise<string> {
  const session = pool.ready() ?? (await pool.connect());
  const done = pool.track(session);
  const stream = session.request({ ":path": "/" });
  let body = "";
  stream.setEncoding("utf8").on("data", (d: string) => (body += d));
  await new Promise((resolve) => stream.on("close", resolve));
  done();
  return body;
}

const servers: http2.Http2Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

// Loopback answers on all of 127.0.0.0/8: three "pods" behind one name, one port.
test("calls spread round robin over every address the name stands for; a new address joins on re-resolution", async () => {
  const a = await startServer("127.0.0.2");
  const b = await startServer("127.0.0.3", a.port);
  servers.push(a.server, b.server);
  let addresses = ["127.0.0.2", "127.0.0.3"];
  const pool = createSessionPool({ baseUrl: `http://pods.test:${a.port}`, resolve: async () => addresses, resolveEveryMs: 0 });
  const answered = new Set<string>();
  await waitFor("both pods connected", async () => answered.add(await ask(pool)).size === 2);
  const seen = new Map<string, number>();
  for (let i = 0; i < 40; i++) {
    const host = await ask(pool);
    seen.set(host, (seen.get(host) ?? 0) + 1);
  }
  assert.deepEqual([...seen].sort(), [["127.0.0.2", 20], ["127.0.0.3", 20]], "round robin over connected sessions");

  const c = await startServer("127.0.0.4", a.port);
  servers.push(c.server);
  addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
  const hosts = new Set<string>();
  await pool.connect(); // connects the new address too
  await waitFor("the new pod gets calls", async () => hosts.add(await ask(pool)).has("127.0.0.4"));
  pool.close();
});

test("an address where nothing listens is skipped; a pod that goes away stops getting calls", async () => {
  const live = await startServer("127.0.0.5");
  servers.push(live.server);
  const gone = await startServer("127.0.0.6", live.port);
  const pool = createSessionPool({ baseUrl: `http://pods.test:${live.port}`, resolve: async () => ["127.0.0.7", "127.0.0.5", "127.0.0.6"] });
  assert.match(await ask(pool), /^127\.0\.0\.[56]$/, "127.0.0.7 refuses; a live one answers");
  const answered = new Set<string>();
  await waitFor("both live pods connected", async () => answered.add(await ask(pool)).size === 2);
  gone.server.close();
  for (const s of gone.sessions) s.destroy();
  // Its connection's close reaches the client asynchronously; from then on it gets nothing.
  await waitFor("the gone pod's connection closed", async () => (await ask(pool)) === "127.0.0.5" && (await ask(pool)) === "127.0.0.5");
  for (let i = 0; i < 10; i++) assert.equal(await ask(pool), "127.0.0.5");
  pool.close();
});

test("no address answering fails with the connection error", async () => {
  const pool = createSessionPool({ baseUrl: "http://127.0.0.9:1" });
  await assert.rejects(pool.connect(), /ECONNREFUSED/);
  pool.close();
});
