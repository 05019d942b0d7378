/**
 * What both providers' adapters are configured with, and the client options
 * their official SDKs share.
 */

/** What a provider adapter needs to know. */
export interface ProviderOptions {
  readonly baseURL?: string;
  readonly apiKey: string;
  readonly model: string;
  readonly stallMs: number;
}

/** Options the `openai` and `@anthropic-ai/sdk` clients both take, set the same way for both. */
export function sdkClientOptions(options: ProviderOptions) {
  return {
    apiKey: options.apiKey,
    baseURL: options.baseURL,
    // Retrying is the caller's decision (a durable turn re-runs a model call whole); an
    // SDK retry would hide a 429's retry-after and multiply the wait behind a stall.
    maxRetries: 0,
    // Time to response headers; the stall timer covers the body.
    timeout: options.stallMs,
    // The SDKs log a malformed chunk's raw text (conversation content); we report an error instead.
    logLevel: "off" as const,
  };
}
