/**
 * The storage service: encrypted user records, vectors with search, backups.
 * Design notes in README.md beside this file.
 */
import { join } from "node:path";
import { BackupService } from "../../gen/switchyard/storage/v1/backup_pb.js";
import { RecordService } from "../../gen/switchyard/storage/v1/record_pb.js";
import { VectorService } from "../../gen/switchyard/storage/v1/vector_pb.js";
import { type ServiceModule } from "../../platform/index.js";
import { type BlobStore, createBodies, createS3BlobStore } from "./blobs.js";
import { pruneIdempotencyKeys } from "./idempotency.js";
import { loadKeyring } from "./keyring.js";
import { createPageTokens } from "./page-token.js";
import { createRecordHandlers } from "./records.js";
import { createFeatureHashingEmbedder, createOpenAiEmbedder } from "./embedder.js";
import { createVectorHandlers, pgvectorSupport } from "./vectors.js";
import { createBackupHandlers } from "./backups.js";
import { readStorageSettings, storageVars } from "./settings.js";
import type { Quotas } from "./usage.js";

const MAINTAIN_EVERY_MS = 60_000;

/** Test seams: wrap the S3 blob store (e.g. to crash after a write). */
export interface StorageModuleOptions {
  readonly wrapBlobStore?: (store: BlobStore) => BlobStore;
}

/**
 * The storage module, reading its variables (see settings.ts) from `source`
 * at start; tests pass their own.
 */
export function createStorageModule(source: NodeJS.ProcessEnv = process.env, options: StorageModuleOptions = {}): ServiceModule {
  return {
    name: "storage",
    settings: storageVars,
    summary:
      "records with envelope encryption at rest (`STORAGE_MASTER_KEY`), etags, quotas; vectors with exact or pgvector HNSW cosine search; consistent encrypted backups; blobs in PostgreSQL or S3",
    serves: [RecordService, VectorService, BackupService],
    migrations: new URL("./migrations/", import.meta.url),
    uses: ["db"],
    async start(ctx) {
      const s = readStorageSettings(source);
      const { db, log } = ctx;
      // Only the embedded development database may run on a generated key (see keyring.ts).
      const devKeyFile = source.DATABASE_URL ? undefined : join(source.DATA_DIR || ".data", "storage-master-key");
      const keyring = loadKeyring(s.STORAGE_MASTER_KEY, devKeyFile, log);
      let blobs: BlobStore | undefined;
      if (s.STORAGE_S3_ENDPOINT !== "") {
        blobs = await createS3BlobStore({
          endpoint: s.STORAGE_S3_ENDPOINT,
          bucket: s.STORAGE_S3_BUCKET,
          region: s.STORAGE_S3_REGION,
          accessKeyId: s.STORAGE_S3_ACCESS_KEY_ID,
          secretAccessKey: s.STORAGE_S3_SECRET_ACCESS_KEY,
        });
        blobs = options.wrapBlobStore?.(blobs) ?? blobs;
      }
      const bodies = createBodies({ db, keyring, blobs, graceMs: s.STORAGE_BLOB_GRACE_MS, log });
      const quotas: Quotas = { records: s.STORAGE_QUOTA_RECORDS, bytes: s.STORAGE_QUOTA_BYTES, vectors: s.STORAGE_QUOTA_VECTORS, backups: s.STORAGE_BACKUPS_KEEP };
      const pages = createPageTokens(keyring.macKey("page-token"));
      const records = createRecordHandlers({ db, bodies, pages, quotas, log });
      const embedder =
        s.EMBEDDINGS_BASE_URL === ""
          ? createFeatureHashingEmbedder()
          : createOpenAiEmbedder({ baseUrl: s.EMBEDDINGS_BASE_URL, apiKey: s.EMBEDDINGS_API_KEY, model: s.EMBEDDINGS_MODEL });
      const support = await pgvectorSupport(db);
      const vectors = createVectorHandlers({ db, quotas, embedder, log }, support);
      const backups = createBackupHandlers({ db, bodies, pages, quotas, maxBackupBytes: s.STORAGE_BACKUP_MAX_BYTES, pgvector: support.present, log });

      const timer = setInterval(() => {
        Promise.all([bodies.sweep(), pruneIdempotencyKeys(db.sql)]).catch((err: unknown) =>
          log.error({ err: String(err) }, "storage maintenance failed; retrying in a minute"),
        );
      }, MAINTAIN_EVERY_MS);
      timer.unref();
      return {
        services: [records, vectors, backups],
        async stop() {
          clearInterval(timer);
        },
      };
    },
  };
}

/** The storage module as `npm start` runs it, configured from the environment. */
export const storage: ServiceModule = createStorageModule();
