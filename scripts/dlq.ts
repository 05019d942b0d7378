/**
 * `npm run dlq -- list [--limit N] [--json]`: the dead letters (oldest first):
 * id, when, consumer, subject, event id, deliveries and last error.
 * `npm run dlq -- replay <id>`: publishes dead letter <id> again for the
 * consumer that gave up on it (others skip it by event id) and deletes it.
 * Connects to NATS_URL (default nats://127.0.0.1:4222). Exit 0 on success,
 * 1 when NATS cannot be reached or the id is unknown, 2 for bad usage.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { listDeadLetters, replayDeadLetter } from "../platform/events/dlq.js";
import { ensureEventStreams } from "../platform/events/streams.js";

const usage = "usage: npm run dlq -- list [--limit N] [--json] | npm run dlq -- replay <id>";
const [command, ...rest] = process.argv.slice(2);
const fail = (message: string, code: number): never => {
  process.stderr.write(`dlq: ${message}\n`);
  process.exit(code);
};

if (command !== "list" && command !== "replay") fail(usage, 2);
const url = process.env.NATS_URL || "nats://127.0.0.1:4222";
const nc = await connect({ servers: url, name: "switchyard-dlq", timeout: 5000 }).catch((err: unknown) =>
  fail(`cannot reach NATS at ${new URL(url).host}: ${(err as Error).message}`, 1),
);
try {
  const jsm = await jetstreamManager(nc, { timeout: 5000 });
  await ensureEventStreams(jsm);
  if (command === "list") {
    const limitAt = rest.indexOf("--limit");
    const limit = limitAt === -1 ? 100 : Number(rest[limitAt + 1]);
    if (!Number.isInteger(limit) || limit < 1) fail(`--limit needs a positive whole number\n${usage}`, 2);
    const letters = await listDeadLetters(jsm, limit);
    if (rest.includes("--json")) process.stdout.write(`${JSON.stringify(letters, null, 2)}\n`);
    else if (letters.length === 0) process.stdout.write("no dead letters\n");
    else {
      for (const d of letters) {
        process.stdout.write(
          `${d.id}\t${d.deadAt.toISOString()}\t${d.consumer}\t${d.subject}\tevent ${d.eventId}\t${d.deliveries} deliveries\t${d.error}\n`,
        );
      }
    }
  } else {
    const id = Number(rest[0]);
    if (!Number.isInteger(id) || id < 1) fail(`replay needs the id of a dead letter (a number from list)\n${usage}`, 2);
    const letter = await replayDeadLetter(jsm, jetstream(nc, { timeout: 5000 }), id);
    if (letter === null) fail(`no dead letter with id ${id}`, 1);
    else process.stdout.write(`replayed dead letter ${id}: event ${letter.eventId} on ${letter.subject} for ${letter.consumer}\n`);
  }
} finally {
  await nc.close();
}
