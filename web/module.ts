/**
 * The web console as a service module: serves the built console at "/" (and
 * builds it on first use when missing). `SERVICES=web` runs it alone, as its
 * container in docker compose does; Envoy sends every path that is not an RPC,
 * JWKS, webhook or WebSocket to it.
 */
import type { ServiceModule } from "../platform/index.js";
import { createStaticRoute, consoleRoute } from "./static.js";

/** The console module: no RPCs, one static route. */
export const web: ServiceModule = {
  name: "web",
  summary: "the browser console at `/`: gRPC-Web with `@connectrpc/connect-web`; built with Vite on first request (`npm run web:build`)",
  serves: [],
  routes: [consoleRoute],
  start: (ctx) => ({ services: [], routes: [createStaticRoute({ log: ctx.log })] }),
};
