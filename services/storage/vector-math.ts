/**
 * The exact search's arithmetic, shared by the no-pgvector path and the
 * tests: float32 embeddings as stored bytes, cosine similarity, a bounded
 * best-k list.
 */

/** Float32 little-endian bytes of `values` (what storage.vectors.embedding holds). */
export function encodeEmbedding(values: readonly number[] | Float32Array): Buffer {
  const out = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i]!, i * 4);
  return out;
}

/** The numbers of stored bytes. */
export function decodeEmbedding(bytes: Uint8Array): Float32Array {
  const copy = new Uint8Array(bytes); // aligned
  return new Float32Array(copy.buffer, 0, copy.length / 4);
}

/** pgvector's text form, "[1,2.5,...]": JavaScript prints each float32 exactly enough for strtof to read it back. */
export function vectorLiteral(values: readonly number[] | Float32Array): string {
  return `[${Array.from(values).join(",")}]`;
}

/** Cosine similarity in double precision; 0 when either vector is all zeros (as pgvector gives NaN distance, we rank it last). */
export function cosine(a: Float32Array | readonly number[], b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < b.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  if (na === 0 || nb === 0) return Number.NaN;
  const s = dot / Math.sqrt(na * nb);
  return Math.max(-1, Math.min(1, s));
}

/** The index of the first non-finite number, or -1. */
export function firstNonFinite(values: readonly number[]): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

/** A scored item. */
export interface Scored<T> {
  readonly score: number;
  readonly id: string;
  readonly item: T;
}

/** Keeps the `k` best of what it is offered: highest score first, then smallest id (the order SQL gives). */
export function createTopK<T>(k: number): { offer(s: Scored<T>): void; result(): Scored<T>[] } {
  const best: Scored<T>[] = [];
  const better = (x: Scored<T>, y: Scored<T>) => x.score > y.score || (x.score === y.score && x.id < y.id);
  return {
    offer(s) {
      if (Number.isNaN(s.score)) return;
      if (best.length === k && !better(s, best[k - 1]!)) return;
      let i = best.length === k ? k - 1 : best.length;
      if (best.length < k) best.push(s);
      while (i > 0 && better(s, best[i - 1]!)) {
        best[i] = best[i - 1]!;
        i--;
      }
      best[i] = s;
    },
    result: () => best.slice(),
  };
}
