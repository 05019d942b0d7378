/**
 * The gateway's NATS connection until platform/nats provides `ctx.nats`:
 * reconnects forever, notices a dead server within seconds.
 */
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";

/** Connects to `url` with endless reconnects; rejects if the first connect fails. */
export function connectGatewayNats(url: string, name: string): Promise<NatsConnection> {
  return connect({
    servers: url,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 2_000,
    maxPingOut: 2,
    waitOnFirstConnect: false,
  });
}
