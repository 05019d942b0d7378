/**
 * A local S3-compatible server for tests: `s3rver` (an S3 API in Node,
 * objects on disk under a temp directory), on a free loopback port. The
 * storage service reaches it through the real `@aws-sdk/client-s3`.
 */
import { ListObjectsV2Command, GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./infra.js";

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;
const S3rver = createRequire(import.meta.url)("s3rver") as S3rverClass;

/** A running local S3 server. */
export interface LocalS3 {
  readonly endpoint: string;
  readonly bucket: string;
  /** The STORAGE_S3_* variables that point the storage service at it. */
  readonly env: Record<string, string>;
  /** A client of it (path-style, s3rver's fixed credentials). */
  readonly client: S3Client;
  /** Every object key in the bucket. */
  keys(): Promise<string[]>;
  /** An object's bytes. */
  get(key: string): Promise<Buffer>;
  stop(): Promise<void>;
}

/** Starts s3rver on a free port with an empty bucket. */
export async function startLocalS3(bucket = "switchyard-test"): Promise<LocalS3> {
  const directory = mkdtempSync(join(tmpdir(), "sy-s3-"));
  const port = await freePort();
  const server = new S3rver({ address: "127.0.0.1", port, silent: true, directory, configureBuckets: [{ name: bucket }] });
  await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const credentials = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
  const client = new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    credentials,
  });
  return {
    endpoint,
    bucket,
    env: {
      STORAGE_S3_ENDPOINT: endpoint,
      STORAGE_S3_BUCKET: bucket,
      STORAGE_S3_ACCESS_KEY_ID: credentials.accessKeyId,
      STORAGE_S3_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    },
    client,
    async keys() {
      const out: string[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
        out.push(...(page.Contents ?? []).map((o) => o.Key!));
        token = page.NextContinuationToken;
      } while (token !== undefined);
      return out;
    },
    async get(key) {
      const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      return Buffer.from(await out.Body!.transformToByteArray());
    },
    async stop() {
      client.destroy();
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
