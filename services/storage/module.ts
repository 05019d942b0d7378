/** The storage service: encrypted user records, vectors, backups. */
import { BackupService } from "../../gen/switchyard/storage/v1/backup_pb.js";
import { RecordService } from "../../gen/switchyard/storage/v1/record_pb.js";
import { VectorService } from "../../gen/switchyard/storage/v1/vector_pb.js";
import { register } from "../../platform/rpc/pipeline.js";
import type { ServiceModule } from "../../platform/service.js";

export const storage: ServiceModule = {
  name: "storage",
  start: () => ({
    services: [register(RecordService, {}), register(VectorService, {}), register(BackupService, {})],
  }),
};
