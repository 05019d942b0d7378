/**
 * The gateway's own environment variables (NATS_URL and the AUTH_* token
 * settings are the platform's), read once at start with the platform's
 * config helpers (a bad value stops the process naming the variable).
 */
import { type ConfigOf, env, int, list, readConfig, url } from "../platform/index.js";

const prefix: (raw: string) => string = (raw) => {
  if (!/^[a-z][a-z0-9]{0,15}$/.test(raw)) throw new Error(`must match ^[a-z][a-z0-9]{0,15}$, got "${raw}"`);
  return raw;
};

export const gatewayVars = {
  GATEWAY_NATS_PREFIX: env("first token of every gateway subject, stream and bucket (isolates deployments)", prefix, "sy"),
  GATEWAY_HEARTBEAT_MS: env("device and instance heartbeat interval in ms; presence is accurate within one", int(200, 300_000), 10_000),
  GATEWAY_ALLOWED_ORIGINS: env("Origins allowed to open /ws/device (comma-separated); requests without Origin are native clients", list(url("http", "https")), () => []),
  GATEWAY_MAX_FRAME_BYTES: env("largest WebSocket message accepted from a device", int(1024, 16 * 1024 * 1024), 1024 * 1024),
  GATEWAY_MAX_CONNECTIONS_PER_USER: env("most device connections one user may hold across all instances", int(1, 10_000), 10),
  GATEWAY_MAX_PENDING_CALLS_PER_USER: env("most tool calls waiting for one user's devices, per instance", int(1, 100_000), 64),
  GATEWAY_MAX_SEND_BUFFER_BYTES: env("bytes queued to one device before it is disconnected as too slow", int(1024, 256 * 1024 * 1024), 4 * 1024 * 1024),
  GATEWAY_MAX_FRAMES_PER_SECOND: env("frames (pings included) a device may send per second, burst twice that", int(1, 100_000), 100),
  GATEWAY_NOTIFY_KEEP_PER_USER: env("notifications kept per user (oldest dropped beyond)", int(1, 1_000_000), 10_000),
};

/** The parsed gateway variables. */
export type GatewaySettings = ConfigOf<typeof gatewayVars>;

/** Reads the gateway variables; throws ConfigError naming each bad one. */
export function readGatewaySettings(source: NodeJS.ProcessEnv = process.env): GatewaySettings {
  return readConfig(gatewayVars, source);
}
