/** The billing service: subscriptions, tiers, payment webhooks. */
import { BillingService } from "../../gen/switchyard/billing/v1/billing_pb.js";
import { register, type ServiceModule } from "../../platform/index.js";

export const billing: ServiceModule = {
  name: "billing",
  summary: "subscriptions and tiers (not built yet: every RPC answers UNIMPLEMENTED)",
  serves: [BillingService],
  start: () => ({ services: [register(BillingService, {})] }),
};
