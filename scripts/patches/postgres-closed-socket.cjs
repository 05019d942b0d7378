// postinstall: guards postgres.js 3.4.9 against a write on a closed socket.
//
// When PostgreSQL restarts under load, postgres.js schedules `nextWrite` for a
// connection whose socket is already gone and throws an uncaught TypeError
// that takes the whole process down (porsager/postgres#1208, fixed upstream,
// not yet released). The guard fails that write with CONNECTION_CLOSED, which
// the pool already handles. test/data/postgres-restart.test.ts fails without
// it. Remove this file and the postinstall script once a release has the fix.
const fs = require("node:fs");

const marker = "switchyard-guard";
const anchor = "function nextWrite(fn) {\n";
const guard =
  "    if (!socket) { chunk = nextWriteTimer = null; error(Errors.connection('CONNECTION_CLOSED', options)); return false } " +
  `// ${marker}: porsager/postgres#1208\n`;

for (const dir of ["src", "cjs/src", "cf/src"]) {
  const file = `node_modules/postgres/${dir}/connection.js`;
  let source;
  try {
    source = fs.readFileSync(file, "utf8");
  } catch {
    continue; // this build flavour is not installed
  }
  if (source.includes(marker)) continue;
  if (!source.includes(anchor)) throw new Error(`postgres changed: review the nextWrite guard in ${file}`);
  fs.writeFileSync(file, source.replace(anchor, anchor + guard));
}
