/**
 * EmbedText through an OpenAI-compatible embeddings API, reached with the
 * official `openai` package pointed at a local server speaking its wire
 * format, in both encodings; a failing provider is UNAVAILABLE naming the
 * variables to check, never echoing the key.
 */
import { Code } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createOpenAiEmbedder } from "../../services/storage/embedder.js";
import { expectedEmbedding, startEmbeddingsServer, type EmbeddingsServer } from "../support/embeddings-server.js";
import { failure, startStorage, type StorageUnderTest } from "./support.js";

describe("EmbedText with an OpenAI-compatible provider", () => {
  const apiKey = "sk-test-embeddings-key";
  let server: EmbeddingsServer;
  let s: StorageUnderTest;
  before(async () => {
    server = await startEmbeddingsServer(apiKey);
    s = await startStorage({ storageEnv: { EMBEDDINGS_BASE_URL: server.baseUrl, EMBEDDINGS_API_KEY: apiKey, EMBEDDINGS_MODEL: "test-embed-1" } });
  });
  after(async () => {
    await s.stop();
    await server.close();
  });

  test("the RPC answers with the provider's embeddings, named as such (base64 on the wire, the SDK's default)", async () => {
    const u = await s.user();
    const res = await u.vectors.embedText({ texts: ["hello world", "second text"] });
    assert.equal(res.provider, "openai-compatible");
    assert.equal(res.model, "test-embed-1");
    assert.equal(res.dimensions, 8);
    assert.deepEqual(res.embeddings.map((e) => e.values), [expectedEmbedding("hello world"), expectedEmbedding("second text")]);
    assert.equal(server.formats.at(-1), "base64");
  });

  test("the float encoding decodes to the same numbers", async () => {
    const embedder = createOpenAiEmbedder({ baseUrl: server.baseUrl, apiKey, model: "test-embed-1", encodingFormat: "float" });
    const out = await embedder.embed(["hello world"]);
    assert.equal(server.formats.at(-1), "float");
    assert.deepEqual(out.embeddings[0]!.map(Math.fround), expectedEmbedding("hello world"));
  });

  test("a provider refusing the key: UNAVAILABLE naming the variables, not the key", async () => {
    const bad = await startStorage({ keys: s.keys, storageEnv: { EMBEDDINGS_BASE_URL: server.baseUrl, EMBEDDINGS_API_KEY: "sk-wrong-key", EMBEDDINGS_MODEL: "m" } });
    try {
      const u = await bad.user();
      const err = await failure(u.vectors.embedText({ texts: ["x"] }));
      assert.equal(err.code, Code.Unavailable);
      assert.match(err.rawMessage, /EMBEDDINGS_API_KEY/);
      assert.match(err.rawMessage, /HTTP 401/);
      assert.ok(!err.rawMessage.includes("sk-wrong"));
    } finally {
      await bad.stop();
    }
  });
});
