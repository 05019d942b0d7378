/**
 * grpc.health.v1 for every process: Check, Watch and List over the served
 * services. The overall status ("") is SERVING while the process is ready and
 * not shutting down; each service's own status follows it unless set apart.
 */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { EventEmitter, on } from "node:events";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";

export { Status as ServingStatus };

/** The health of the services a process serves. */
export interface HealthState {
  /** Sets one service's status ("" is the whole process). */
  set(service: string, status: Status): void;
  /** Sets every known service, and the process, to `status`. */
  setAll(status: Status): void;
  /** The status of `service`, or undefined when it is not served here. */
  get(service: string): Status | undefined;
  /** Every service and its status. */
  all(): ReadonlyMap<string, Status>;
  /** The grpc.health.v1.Health implementation reading this state. */
  readonly impl: ServiceImpl<typeof Health>;
}

/** Creates the health state of `services` (fully qualified names), all NOT_SERVING until set. */
export function createHealthState(services: readonly string[]): HealthState {
  const statuses = new Map<string, Status>([["", Status.NOT_SERVING]]);
  for (const s of services) statuses.set(s, Status.NOT_SERVING);
  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  const set = (service: string, status: Status) => {
    if (statuses.get(service) === status) return;
    statuses.set(service, status);
    changes.emit("change", service);
  };
  const impl: ServiceImpl<typeof Health> = {
    check(req) {
      const status = statuses.get(req.service);
      if (status === undefined) throw new ConnectError(`service "${req.service}" is not served here`, Code.NotFound);
      return { status };
    },
    list() {
      return { statuses: Object.fromEntries([...statuses].map(([k, status]) => [k, { status }])) };
    },
    async *watch(req, ctx) {
      let last: Status | undefined;
      const current = () => statuses.get(req.service) ?? Status.SERVICE_UNKNOWN;
      last = current();
      yield { status: last };
      for await (const [service] of on(changes, "change", { signal: ctx.signal })) {
        if (service !== req.service) continue;
        if (current() === last) continue;
        last = current();
        yield { status: last };
      }
    },
  };
  return {
    set,
    setAll(status) {
      for (const k of statuses.keys()) set(k, status);
    },
    get: (service) => statuses.get(service),
    all: () => statuses,
    impl,
  };
}
