/** The storage service: encrypted user records, vectors, backups. */
import { BackupService } from "../../gen/switchyard/storage/v1/backup_pb.js";
import { RecordService } from "../../gen/switchyard/storage/v1/record_pb.js";
import { VectorService } from "../../gen/switchyard/storage/v1/vector_pb.js";
import { register, type ServiceModule } from "../../platform/index.js";

export const storage: ServiceModule = {
  name: "storage",
  summary: "encrypted user records, vectors, backups (not built yet: every RPC answers UNIMPLEMENTED)",
  serves: [RecordService, VectorService, BackupService],
  start: () => ({
    services: [register(RecordService, {}), register(VectorService, {}), register(BackupService, {})],
  }),
};
