/** The plugins service: marketplace, installations, revenue events. */
import { PluginService } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { register } from "../../platform/rpc/pipeline.js";
import type { ServiceModule } from "../../platform/service.js";

export const plugins: ServiceModule = {
  name: "plugins",
  start: () => ({ services: [register(PluginService, {})] }),
};
