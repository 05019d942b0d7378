/** The auth service: accounts, tokens, JWKS. */
import { AuthService } from "../../gen/switchyard/auth/v1/auth_pb.js";
import { register } from "../../platform/rpc/pipeline.js";
import type { ServiceModule } from "../../platform/service.js";

export const auth: ServiceModule = {
  name: "auth",
  start: () => ({ services: [register(AuthService, {})] }),
};
