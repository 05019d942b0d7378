/**
 * The device gateway as a service module (`SERVICES=gateway`): device
 * WebSockets at /ws/device, DeviceService (tool calls, presence, tickets) and
 * NotificationService, all over NATS JetStream so any number of instances
 * share one view. See gateway/README.md for the design.
 */
import { jetstream } from "@nats-io/jetstream";
import { Gauge } from "prom-client";
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { publishDirectEvent, type ServiceModule } from "../platform/index.js";
import type { VerifyAccessToken } from "./auth.js";
import { createGatewayBeats } from "./beats.js";
import { createToolCaller } from "./calls.js";
import { gatewayVars, readGatewaySettings } from "./config.js";
import { deviceService } from "./device-service.js";
import { createDeviceHub } from "./hub.js";
import { gatewayStreams, openGatewayStore } from "./nats-setup.js";
import { notificationService } from "./notify-service.js";
import { createNotifications } from "./notifications.js";
import { createPresenceCache } from "./presence-cache.js";
import { createPresenceStore } from "./presence.js";
import { gatewayNames } from "./subjects.js";
import { createTickets } from "./tickets.js";
import { createDeviceUpgrade, deviceSocketRoute } from "./upgrade.js";
import { DeviceService } from "../gen/switchyard/device/v1/device_pb.js";
import { NotificationService } from "../gen/switchyard/notify/v1/notify_pb.js";
import { DevicesChangedSchema } from "../gen/switchyard/events/v1/events_pb.js";

/** The gateway service module. */
export const gateway: ServiceModule = {
  name: "gateway",
  settings: gatewayVars,
  summary: "cross-instance tool calls through JetStream, presence, notifications with replay; design in [gateway/README.md](gateway/README.md)",
  serves: [DeviceService, NotificationService],
  routes: [deviceSocketRoute],
  replicas: 2,
  uses: ["nats"],
  async start(ctx) {
    const settings = readGatewaySettings();
    const log = ctx.log;
    const names = gatewayNames(settings.GATEWAY_NATS_PREFIX);
    const nc = ctx.nats;
    const storeOptions = { notifyKeepPerUser: settings.GATEWAY_NOTIFY_KEEP_PER_USER };
    // Declared through the platform (replicas, retries, /readyz); it re-declares what a server lost.
    await ctx.streams.declare(gatewayStreams(names, storeOptions));
    const store = await openGatewayStore(nc, names);
    const js = jetstream(nc);
    // The platform's verifier (in-process keys when auth runs here, else AUTH_JWKS_URL), looked up on use.
    const verify: VerifyAccessToken = (token) => {
      const v = ctx.auth.verifier();
      if (v === undefined) return Promise.reject(new ConnectError("this process cannot check tokens: set AUTH_JWKS_URL", Code.Unavailable));
      return v.verify(token);
    };

    const beats = createGatewayBeats({ nc, kv: store.gateways, names, instanceId: ctx.instanceId, intervalMs: settings.GATEWAY_HEARTBEAT_MS, log });
    await beats.start();
    // Readers of the user's devices (chat's tool listings) learn of each change without polling;
    // the flush puts the event on the server before the device is welcomed and can be used.
    const presence = createPresenceStore(store.devices, beats, log, async (userId) => {
      publishDirectEvent(nc, DevicesChangedSchema, create(DevicesChangedSchema, { userId, occurTime: timestampNow() }));
      await nc.flush().catch(() => {});
    });
    const cache = createPresenceCache(nc, store.devices, names);
    const notifications = createNotifications(nc, js, store.jsm, names, log);
    const hub = createDeviceHub({
      nc,
      names,
      instanceId: ctx.instanceId,
      presence,
      notifications,
      verify,
      log,
      limits: {
        heartbeatMs: settings.GATEWAY_HEARTBEAT_MS,
        maxFrameBytes: settings.GATEWAY_MAX_FRAME_BYTES,
        maxConnectionsPerUser: settings.GATEWAY_MAX_CONNECTIONS_PER_USER,
        maxInflightPerUser: settings.GATEWAY_MAX_PENDING_CALLS_PER_USER,
        maxSendBufferBytes: settings.GATEWAY_MAX_SEND_BUFFER_BYTES,
        framesPerSecond: settings.GATEWAY_MAX_FRAMES_PER_SECOND,
      },
    });
    // Others may have dropped our devices from presence while our beat was late.
    beats.onResumed(() => void hub.restorePresence());
    const caller = createToolCaller({
      nc,
      jsm: store.jsm,
      names,
      instanceId: ctx.instanceId,
      cache,
      beats,
      maxPendingPerUser: settings.GATEWAY_MAX_PENDING_CALLS_PER_USER,
      log,
    });
    const tickets = createTickets(store.tickets);
    new Gauge({
      name: "gateway_device_connections",
      help: "Device WebSockets open on this instance",
      registers: [ctx.metrics.registry],
      collect() {
        this.set(hub.size);
      },
    });
    new Gauge({
      name: "gateway_tool_calls_pending",
      help: "Tool calls made from this instance that wait for a device or its outcome",
      registers: [ctx.metrics.registry],
      collect() {
        this.set(caller.pendingCount);
      },
    });

    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect") {
          beats.disconnected();
          cache.clear();
        } else if (s.type === "reconnect") {
          cache.clear(); // changes may have been missed while away
          beats.reconnected();
        }
      }
    })();
    // Devices hear "reconnect elsewhere" as soon as shutdown begins.
    ctx.shutdownSignal.addEventListener("abort", () => void hub.stop(), { once: true });

    return {
      services: [deviceService({ caller, presence, beats, tickets }), notificationService(notifications)],
      upgrades: [
        createDeviceUpgrade({
          hub,
          verify,
          tickets,
          allowedOrigins: settings.GATEWAY_ALLOWED_ORIGINS,
          maxFrameBytes: settings.GATEWAY_MAX_FRAME_BYTES,
          maxConnectionsPerUser: settings.GATEWAY_MAX_CONNECTIONS_PER_USER,
          log,
        }),
      ],
      async stop() {
        await hub.stop();
        caller.stop();
        notifications.stop();
        presence.stop();
        await beats.stop(); // the platform closes the connection after this
      },
    };
  },
};
