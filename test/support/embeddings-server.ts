/**
 * A local server speaking OpenAI's embeddings wire format (POST
 * /v1/embeddings), for tests that reach it through the official `openai`
 * package. It answers `encoding_format` "float" with arrays of numbers and
 * "base64" (what the SDK asks for unless told otherwise) with base64 of
 * float32 little-endian; its embeddings are a fixed function of the text
 * (`expectedEmbedding`), and it requires one API key.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

/** The embedding the server gives `text`: 8 float32 numbers derived from its characters. */
export function expectedEmbedding(text: string): number[] {
  const out = new Array<number>(8).fill(0);
  for (let i = 0; i < text.length; i++) out[i % 8]! += (text.charCodeAt(i) % 97) / 97;
  return out.map((x) => Math.fround(x / Math.max(1, text.length)));
}

/** A running embeddings server. */
export interface EmbeddingsServer {
  /** e.g. http://127.0.0.1:PORT/v1 (what EMBEDDINGS_BASE_URL takes). */
  readonly baseUrl: string;
  /** The encoding_format of each request so far ("" when absent). */
  readonly formats: string[];
  close(): Promise<void>;
}

/** Starts the server; requests must carry "Authorization: Bearer <apiKey>". */
export async function startEmbeddingsServer(apiKey: string): Promise<EmbeddingsServer> {
  const formats: string[] = [];
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    let raw = "";
    req.on("data", (d: Buffer) => (raw += d.toString()));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/embeddings") return send(404, { error: { message: "not found", type: "invalid_request_error" } });
      if (req.headers.authorization !== `Bearer ${apiKey}`) return send(401, { error: { message: "Incorrect API key provided", type: "invalid_request_error", code: "invalid_api_key" } });
      const body = JSON.parse(raw) as { input: string | string[]; model: string; encoding_format?: string };
      formats.push(body.encoding_format ?? "");
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const data = inputs.map((text, index) => {
        const values = expectedEmbedding(text);
        const embedding = body.encoding_format === "base64" ? Buffer.from(Float32Array.from(values).buffer).toString("base64") : values;
        return { object: "embedding", index, embedding };
      });
      send(200, { object: "list", data, model: body.model, usage: { prompt_tokens: inputs.length, total_tokens: inputs.length } });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    formats,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
