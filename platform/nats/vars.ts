/**
 * NATS variables, part of the platform settings (see ../settings.ts).
 */
import { env, url } from "../config.js";

/** Spread into `platformVars`. */
export const natsVars = {
  NATS_URL: env(
    "NATS server URL (nats://host:4222); unset: nats://127.0.0.1:4222, starting nats-server -js from PATH there if nothing listens",
    url("nats", "tls"),
    "",
    true,
  ),
};
