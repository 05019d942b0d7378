/** The plugins service: marketplace, installations, revenue events. */
import { PluginService } from "../../gen/switchyard/plugins/v1/plugins_pb.js";
import { register, type ServiceModule } from "../../platform/index.js";

export const plugins: ServiceModule = {
  name: "plugins",
  summary: "plugin marketplace and installations (not built yet: every RPC answers UNIMPLEMENTED)",
  serves: [PluginService],
  start: () => ({ services: [register(PluginService, {})] }),
};
