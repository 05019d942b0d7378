/**
 * Embedding providers behind EmbedText. Two exist:
 *
 * - "openai-compatible": any server speaking OpenAI's POST /embeddings
 *   (EMBEDDINGS_BASE_URL, EMBEDDINGS_API_KEY, EMBEDDINGS_MODEL), through the
 *   official `openai` package (which asks for base64 by default and decodes
 *   it; "float" can be asked for instead);
 * - "feature-hashing": the offline default, built in and deterministic. It
 *   hashes lower-cased words and character trigrams into 384 signed buckets
 *   and normalises the result. Texts sharing words and spellings land near
 *   each other; it knows no meaning, and every response names it, so nobody
 *   mistakes it for a semantic model.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import OpenAI from "openai";

/** What an embedder returns. */
export interface Embedded {
  readonly embeddings: number[][];
  readonly provider: "openai-compatible" | "feature-hashing";
  readonly model: string;
}

/** A provider of embeddings. */
export interface Embedder {
  embed(texts: readonly string[]): Promise<Embedded>;
}

/** Dimensions of the feature-hashing embedder. */
export const FEATURE_HASHING_DIMS = 384;
const FEATURE_HASHING_MODEL = "feature-hashing-384-v1";

/** 32-bit FNV-1a of a string's UTF-16 code units. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** The features of a text: its words, and the trigrams of each word padded with spaces. */
function features(text: string): string[] {
  const words = text.toLowerCase().normalize("NFKC").match(/[\p{L}\p{N}]+/gu) ?? [];
  const out: string[] = [];
  for (const w of words) {
    out.push(`w:${w}`);
    const padded = ` ${w} `;
    for (let i = 0; i + 3 <= padded.length; i++) out.push(`t:${padded.slice(i, i + 3)}`);
  }
  return out;
}

/** The feature-hashing embedding of `text`: unit length, or all zeros for a text without words. */
export function featureHash(text: string, dims = FEATURE_HASHING_DIMS): number[] {
  const v = new Float64Array(dims);
  for (const f of features(text)) {
    const h = fnv1a(f);
    v[h % dims]! += h & 0x80000000 ? -1 : 1;
  }
  let norm = 0;
  for (const x of v) norm += x * x;
  norm = Math.sqrt(norm);
  return Array.from(v, (x) => (norm === 0 ? 0 : Math.fround(x / norm)));
}

/** The built-in deterministic feature-hashing embedder. */
export function createFeatureHashingEmbedder(): Embedder {
  return {
    async embed(texts) {
      return { embeddings: texts.map((t) => featureHash(t)), provider: "feature-hashing", model: FEATURE_HASHING_MODEL };
    },
  };
}

/** An embedder over an OpenAI-compatible embeddings API. */
export function createOpenAiEmbedder(o: { baseUrl: string; apiKey: string; model: string; encodingFormat?: "float" | "base64" }): Embedder {
  const client = new OpenAI({ baseURL: o.baseUrl, apiKey: o.apiKey === "" ? "unset" : o.apiKey, maxRetries: 1, timeout: 30_000 });
  return {
    async embed(texts) {
      try {
        const res = await client.embeddings.create({ model: o.model, input: [...texts], ...(o.encodingFormat ? { encoding_format: o.encodingFormat } : {}) });
        const ordered = [...res.data].sort((a, b) => a.index - b.index).map((d) => d.embedding as number[]);
        if (ordered.length !== texts.length) throw new Error(`asked for ${texts.length} embeddings, got ${ordered.length}`);
        return { embeddings: ordered, provider: "openai-compatible", model: res.model || o.model };
      } catch (err) {
        // The provider's own words may echo the key's prefix: say only what kind of failure it was.
        const status = (err as { status?: number }).status;
        throw new ConnectError(
          `the embeddings provider at EMBEDDINGS_BASE_URL failed (${status === undefined ? (err as Error).name : `HTTP ${status}`}); check EMBEDDINGS_BASE_URL, EMBEDDINGS_API_KEY and EMBEDDINGS_MODEL`,
          Code.Unavailable,
        );
      }
    },
  };
}
