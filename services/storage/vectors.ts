/**
 * The VectorService RPCs. Embeddings are kept as float32 bytes in every
 * database; where PostgreSQL has pgvector, also as a `vector`, indexed with
 * HNSW (cosine) per number of dimensions (a partial expression index, made
 * when the first collection of that size appears; pgvector indexes at most
 * 2,000 dimensions, larger collections are searched exactly). Search is:
 *
 * - "hnsw": pgvector's index, approximate (pgvector, not `exact`, <= 2,000 dims);
 * - "exact" on pgvector: every vector compared by pgvector's `<=>` in SQL;
 * - "exact" without pgvector: every vector compared here, streamed from
 *   PostgreSQL in batches, keeping the best k.
 *
 * Both exact paths order by cosine distance, then vector_id.
 */
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { type SearchVectorsRequest, type Vector, VectorService } from "../../gen/switchyard/storage/v1/vector_pb.js";
import type { Database, Logger, ServiceRegistration, TransactionSql } from "../../platform/index.js";
import { register } from "../../platform/index.js";
import { actingUser } from "./access.js";
import type { Embedder } from "./embedder.js";
import { checkLabels } from "./labels.js";
import { charge, type Quotas } from "./usage.js";
import { cosine, createTopK, decodeEmbedding, encodeEmbedding, firstNonFinite, vectorLiteral } from "./vector-math.js";

/** What the vector handlers are built from. */
export interface VectorDeps {
  readonly db: Database;
  readonly quotas: Quotas;
  readonly embedder: Embedder;
  readonly log: Logger;
}

/** A match before it becomes a message. */
interface Found {
  readonly vector_id: string;
  readonly labels: Record<string, string>;
  readonly embedding: Buffer;
  readonly score: number;
}

const MAX_INDEXED_DIMS = 2000;
const DEFAULT_TOP_K = 10;

/** What the database offers for vectors. */
export interface PgvectorSupport {
  /** storage.vectors has the pgvector column (the migration adds it where the extension exists). */
  readonly present: boolean;
  /** pgvector 0.8 or later: HNSW scans can go on until enough rows pass the filters. */
  readonly iterativeScan: boolean;
}

/** Whether storage.vectors has the pgvector column, and whether its pgvector scans iteratively. */
export async function pgvectorSupport(db: Database): Promise<PgvectorSupport> {
  const [row] = await db.sql<{ present: boolean; version: string | null }[]>`
    select exists (select 1 from information_schema.columns where table_schema = 'storage' and table_name = 'vectors' and column_name = 'embedding_v') as present,
           (select extversion from pg_extension where extname = 'vector') as version`;
  const [major = 0, minor = 0] = (row!.version ?? "0.0").split(".").map(Number);
  return { present: row!.present, iterativeScan: row!.present && (major > 0 || minor >= 8) };
}

function checkEmbedding(values: readonly number[], field: string): void {
  if (values.length === 0) throw new ConnectError(`${field}: must hold 1 to 4096 numbers`, Code.InvalidArgument);
  const bad = firstNonFinite(values);
  if (bad >= 0) throw new ConnectError(`${field}[${bad}]: must be a finite number, got ${values[bad]}`, Code.InvalidArgument);
}

function checkVectors(vectors: readonly Vector[]): void {
  const seen = new Set<string>();
  vectors.forEach((v, i) => {
    if (seen.has(v.vectorId)) throw new ConnectError(`vectors[${i}].vector_id: "${v.vectorId}" appears twice in the request`, Code.InvalidArgument);
    seen.add(v.vectorId);
    checkEmbedding(v.embedding, `vectors[${i}].embedding`);
    if (v.embedding.length !== vectors[0]!.embedding.length) {
      throw new ConnectError(`vectors[${i}].embedding: has ${v.embedding.length} dimensions, vectors[0] has ${vectors[0]!.embedding.length}`, Code.InvalidArgument);
    }
    checkLabels(v.labels, `vectors[${i}].labels`);
  });
}

/** A vector to write: its id, numbers and labels. */
export interface VectorRow {
  readonly vectorId: string;
  readonly embedding: readonly number[] | Float32Array;
  readonly labels: Readonly<Record<string, string>>;
}

/** Inserts or replaces `vectors` of one collection in one statement (the collection row must exist). */
export async function writeVectors(tx: TransactionSql, pgvector: boolean, userId: string, collection: string, dims: number, vectors: readonly VectorRow[]): Promise<void> {
  const ids = vectors.map((v) => v.vectorId);
  const embeddings = vectors.map((v) => encodeEmbedding(v.embedding).toString("base64"));
  const labels = vectors.map((v) => JSON.stringify(v.labels));
  if (pgvector) {
    const literals = vectors.map((v) => vectorLiteral(v.embedding));
    await tx`
      insert into storage.vectors (user_id, collection, vector_id, dims, embedding, labels, embedding_v)
      select ${userId}, ${collection}, t.id, ${dims}, decode(t.e, 'base64'), t.l::jsonb, t.v::public.vector
      from unnest(${tx.array(ids)}::text[], ${tx.array(embeddings)}::text[], ${tx.array(labels)}::text[], ${tx.array(literals)}::text[]) as t(id, e, l, v)
      on conflict (user_id, collection, vector_id) do update
        set embedding = excluded.embedding, labels = excluded.labels, embedding_v = excluded.embedding_v, update_time = now()`;
    return;
  }
  await tx`
    insert into storage.vectors (user_id, collection, vector_id, dims, embedding, labels)
    select ${userId}, ${collection}, t.id, ${dims}, decode(t.e, 'base64'), t.l::jsonb
    from unnest(${tx.array(ids)}::text[], ${tx.array(embeddings)}::text[], ${tx.array(labels)}::text[]) as t(id, e, l)
    on conflict (user_id, collection, vector_id) do update set embedding = excluded.embedding, labels = excluded.labels, update_time = now()`;
}

/** Creates the VectorService registration; `support` says what pgvector the database has. */
export function createVectorHandlers(deps: VectorDeps, support: PgvectorSupport): ServiceRegistration {
  const { db, quotas, embedder, log } = deps;
  const pgvector = support.present;
  const iterativeScan = support.iterativeScan;
  const indexed = new Set<number>();

  const who = (ctx: HandlerContext, userId: string) =>
    actingUser(ctx, userId, "user_id", () => new ConnectError(`user "${userId}" not found`, Code.NotFound));

  /** Makes the HNSW index for `dims` once (outside any transaction; a concurrent maker's index is as good). */
  async function ensureIndex(dims: number): Promise<void> {
    if (!pgvector || dims > MAX_INDEXED_DIMS || indexed.has(dims) || !Number.isInteger(dims)) return;
    try {
      // dims is an integer from our own table: the index and its predicate need it literal.
      await db.sql.unsafe(
        `create index if not exists vectors_hnsw_${dims} on storage.vectors using hnsw ((embedding_v::public.vector(${dims})) public.vector_cosine_ops) where dims = ${dims}`,
      );
      indexed.add(dims);
    } catch (err) {
      log.warn({ err: String(err), dims }, "could not create the HNSW index for this size; searches stay exact until it exists");
    }
  }

  /** The collection's dimensions, creating it with `dims` if missing; locks it for the transaction. */
  async function lockCollection(tx: TransactionSql, userId: string, collection: string, dims: number): Promise<number> {
    await tx`insert into storage.collections (user_id, collection, dimensions) values (${userId}, ${collection}, ${dims}) on conflict do nothing`;
    const [c] = await tx<{ dimensions: number }[]>`select dimensions from storage.collections where user_id = ${userId} and collection = ${collection} for update`;
    return c!.dimensions;
  }

  async function searchHnsw(userId: string, req: SearchVectorsRequest, dims: number, k: number): Promise<Found[]> {
    return db.tx(async (tx) => {
      // A label filter is applied to the index's candidates: look at more of them. (The filter is
      // sent as text: a jsonb-typed parameter never matched through the embedded PGlite's socket.)
      await tx.unsafe(`set local hnsw.ef_search = ${Math.min(1000, Math.max(100, k * 4))}`);
      // The index holds every user's vectors of this size: without iterative scans (pgvector 0.8+), a
      // small collection among large ones would find few or none of its own in the candidates.
      if (iterativeScan) await tx.unsafe("set local hnsw.iterative_scan = strict_order");
      return tx.unsafe<Found[]>(
        `select vector_id, labels, embedding, 1 - (embedding_v::public.vector(${dims}) operator(public.<=>) $1::public.vector(${dims})) as score
         from storage.vectors
         where dims = ${dims} and user_id = $2 and collection = $3 and labels @> $4::text::jsonb
         order by embedding_v::public.vector(${dims}) operator(public.<=>) $1::public.vector(${dims})
         limit ${k}`,
        [vectorLiteral(req.embedding), userId, req.collection, JSON.stringify(req.labels)],
      );
    });
  }

  async function searchExactSql(userId: string, req: SearchVectorsRequest, k: number): Promise<Found[]> {
    return db.sql<Found[]>`
      select vector_id, labels, embedding, 1 - (embedding_v operator(public.<=>) ${vectorLiteral(req.embedding)}::public.vector) as score
      from storage.vectors
      where user_id = ${userId} and collection = ${req.collection} and labels @> ${db.sql.json(req.labels)}
      order by embedding_v operator(public.<=>) ${vectorLiteral(req.embedding)}::public.vector, vector_id
      limit ${k}`;
  }

  async function searchExactHere(userId: string, req: SearchVectorsRequest, k: number): Promise<Found[]> {
    const top = createTopK<Found>(k);
    const query = Float32Array.from(req.embedding);
    await db.sql<Found[]>`
      select vector_id, labels, embedding from storage.vectors
      where user_id = ${userId} and collection = ${req.collection} and labels @> ${db.sql.json(req.labels)}`.cursor(2000, (rows) => {
      for (const r of rows) top.offer({ id: r.vector_id, score: cosine(query, decodeEmbedding(r.embedding)), item: r });
    });
    return top.result().map((s) => ({ ...s.item, score: s.score }));
  }

  return register(VectorService, {
    async upsertVectors(req, ctx) {
      const me = who(ctx, req.userId);
      checkVectors(req.vectors);
      const dims = req.vectors[0]!.embedding.length;
      await db.tx(async (tx) => {
        const have = await lockCollection(tx, me.userId, req.collection, dims);
        if (have !== dims) {
          throw new ConnectError(`vectors[0].embedding: has ${dims} dimensions; collection "${req.collection}" has ${have}`, Code.InvalidArgument);
        }
        const ids = req.vectors.map((v) => v.vectorId);
        const [{ n }] = (await tx`select count(*)::int as n from storage.vectors where user_id = ${me.userId} and collection = ${req.collection} and vector_id = any(${tx.array(ids)}::text[])`) as unknown as [{ n: number }];
        await charge(tx, me.userId, me.tier, { vectors: ids.length - n }, quotas);
        await writeVectors(tx, pgvector, me.userId, req.collection, dims, req.vectors);
      });
      await ensureIndex(dims);
      return { upsertedCount: req.vectors.length, dimensions: dims };
    },

    async searchVectors(req, ctx) {
      const me = who(ctx, req.userId);
      checkEmbedding(req.embedding, "embedding");
      checkLabels(req.labels, "labels");
      const [c] = await db.sql<{ dimensions: number }[]>`select dimensions from storage.collections where user_id = ${me.userId} and collection = ${req.collection}`;
      if (c === undefined) return { matches: [], method: "exact" };
      if (c.dimensions !== req.embedding.length) {
        throw new ConnectError(`embedding: has ${req.embedding.length} dimensions; collection "${req.collection}" has ${c.dimensions}`, Code.InvalidArgument);
      }
      const k = req.topK === 0 ? DEFAULT_TOP_K : req.topK;
      const useIndex = pgvector && !req.exact && c.dimensions <= MAX_INDEXED_DIMS;
      if (useIndex) await ensureIndex(c.dimensions);
      const found = useIndex
        ? await searchHnsw(me.userId, req, c.dimensions, k)
        : pgvector
          ? await searchExactSql(me.userId, req, k)
          : await searchExactHere(me.userId, req, k);
      const matches = found
        .filter((f) => Number.isFinite(f.score) && (req.minScore === undefined || f.score >= req.minScore))
        .map((f) => ({
          vectorId: f.vector_id,
          score: f.score,
          labels: f.labels,
          embedding: req.includeEmbeddings ? Array.from(decodeEmbedding(f.embedding)) : [],
        }));
      return { matches, method: useIndex ? "hnsw" : "exact" };
    },

    async deleteVectors(req, ctx) {
      const me = who(ctx, req.userId);
      if (req.deleteAll === (req.vectorIds.length > 0)) {
        throw new ConnectError("set exactly one of vector_ids and delete_all", Code.InvalidArgument);
      }
      req.vectorIds.forEach((id, i) => {
        if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new ConnectError(`vector_ids[${i}]: must be an id (^[A-Za-z0-9_-]{1,64}$)`, Code.InvalidArgument);
      });
      const deleted = await db.tx(async (tx) => {
        const gone = req.deleteAll
          ? await tx`delete from storage.vectors where user_id = ${me.userId} and collection = ${req.collection} returning 1`
          : await tx`delete from storage.vectors where user_id = ${me.userId} and collection = ${req.collection} and vector_id = any(${tx.array(req.vectorIds)}::text[]) returning 1`;
        if (req.deleteAll) await tx`delete from storage.collections where user_id = ${me.userId} and collection = ${req.collection}`;
        if (gone.length > 0) await charge(tx, me.userId, me.tier, { vectors: -gone.length }, quotas);
        return gone.length;
      });
      return { deletedCount: deleted };
    },

    async embedText(req) {
      req.texts.forEach((t, i) => {
        if (t.length === 0 || t.length > 8192) throw new ConnectError(`texts[${i}]: must be 1 to 8192 characters, got ${t.length}`, Code.InvalidArgument);
      });
      const out = await embedder.embed(req.texts);
      return {
        embeddings: out.embeddings.map((values) => ({ values })),
        provider: out.provider,
        model: out.model,
        dimensions: out.embeddings[0]?.length ?? 0,
      };
    },
  });
}
