/** The device gateway: device WebSockets, presence, tool calls, notifications. */
import { DeviceService } from "../gen/switchyard/device/v1/device_pb.js";
import { NotificationService } from "../gen/switchyard/notify/v1/notify_pb.js";
import { register } from "../platform/rpc/pipeline.js";
import type { ServiceModule } from "../platform/service.js";

export const gateway: ServiceModule = {
  name: "gateway",
  start: () => ({ services: [register(DeviceService, {}), register(NotificationService, {})] }),
};
