/**
 * The contents of a backup: a user's records (the client's ciphertext, no
 * longer under our encryption at rest, which the archive as a whole is put
 * back under) and vectors, with their metadata, as JSON with base64 bytes.
 */

/** A record as archived. */
export interface ArchivedRecord {
  readonly record_id: string;
  readonly key_id: string;
  readonly content_type: string;
  readonly labels: Record<string, string>;
  readonly etag: string;
  readonly create_time: string;
  readonly update_time: string;
  /** base64 of the client's ciphertext. */
  readonly ciphertext: string;
}

/** A vector as archived. */
export interface ArchivedVector {
  readonly collection: string;
  readonly vector_id: string;
  readonly labels: Record<string, string>;
  /** base64 of float32 little-endian numbers. */
  readonly embedding: string;
}

/** A whole archive. */
export interface Archive {
  readonly format: 1;
  readonly user_id: string;
  readonly snapshot_time: string;
  readonly records: ArchivedRecord[];
  readonly collections: { collection: string; dimensions: number }[];
  readonly vectors: ArchivedVector[];
}

/** The archive's bytes. */
export function encodeArchive(a: Archive): Buffer {
  return Buffer.from(JSON.stringify(a));
}

/** Reads archive bytes; throws on another format. */
export function decodeArchive(bytes: Buffer): Archive {
  const a = JSON.parse(bytes.toString()) as Archive;
  if (a.format !== 1) throw new Error(`unknown backup archive format ${String(a.format)}`);
  return a;
}
