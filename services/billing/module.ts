/** The billing service: subscriptions, tiers, payment webhooks. */
import { BillingService } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { register } from "../../platform/rpc/pipeline.js";
import type { ServiceModule } from "../../platform/service.js";

export const billing: ServiceModule = {
  name: "billing",
  start: () => ({ services: [register(BillingService, {})] }),
};
