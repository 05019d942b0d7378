/**
 * NATS variables, part of the platform settings (see ../settings.ts).
 */
import { env, int, url } from "../config.js";

const natsUrl = url("nats", "tls");

/** The servers of a NATS_URL value: one URL or several, comma-separated. */
export function natsServers(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** Parses NATS_URL: one or more nats:// or tls:// URLs, comma-separated (kept as given). */
function natsUrlList(raw: string): string {
  const servers = natsServers(raw);
  if (servers.length === 0) throw new Error("expected one or more nats:// URLs, comma-separated");
  for (const s of servers) natsUrl(s);
  return raw;
}

/** Spread into `platformVars`. */
export const natsVars = {
  NATS_URL: env(
    "NATS server URL, or several comma-separated (nats://n1:4222,nats://n2:4222,nats://n3:4222): all are tried at start and on reconnect; unset: nats://127.0.0.1:4222, starting nats-server -js from PATH there if nothing listens",
    natsUrlList,
    "",
    true,
  ),
  NATS_REPLICAS: env(
    "replicas of every JetStream stream and KV bucket the mesh declares (3 on a 3-node cluster); an existing stream's replicas are never lowered",
    int(1, 5),
    1,
  ),
  NATS_DECLARE_BUDGET_MS: env(
    "how long start waits for JetStream streams and buckets (a node down, a leader being elected) before it serves with /readyz false, retrying",
    int(0, 600_000),
    20_000,
  ),
};
