import postgres from "postgres";
import { startOwnPostgres } from "./test/support/infra.js";
const orig = globalThis.setImmediate;
const stacks = new WeakMap<object, string>();
(globalThis as any).setImmediate = (fn: any, ...a: any[]) => { const h = orig(fn, ...a); if (fn.name === "nextWrite") stacks.set(h, new Error().stack!); return h; };
let lastStack = "";
const origWrap = orig;
(globalThis as any).setImmediate = (fn: any, ...a: any[]) => { if (fn.name === "nextWrite") { const st = new Error().stack!; return origWrap(() => { lastStack = st; fn(); }, ...a); } return origWrap(fn, ...a); };
let printed = 0;
process.on("uncaughtException", (e) => { if (printed++ < 2) console.log("UNCAUGHT", e.message, "\nscheduled at:", lastStack.split("\n").slice(1, 9).join("\n")); });
const pg = await startOwnPostgres();
const sql = postgres(pg.url, { max: 10, onnotice: () => {}, connect_timeout: 5 });
let running = true;
const loops = Array.from({ length: 30 }, async (_, k) => {
  while (running) {
    try {
      if (k % 2) await sql.begin(async (tx) => { await tx`select 1`; await tx`select pg_sleep(0.002)`; });
      else await sql`select ${k}::int`;
    } catch { await new Promise((r) => setTimeout(r, 5)); }
  }
});
for (let round = 0; round < 3; round++) {
  await new Promise((r) => setTimeout(r, 300));
  await pg.stop();
  await new Promise((r) => setTimeout(r, 300));
  await pg.start();
}
running = false; await Promise.all(loops);
await sql.end(); await pg.stop();
