/**
 * Calls server-side plugin tools over the Model Context Protocol with the
 * official SDK's client and its Streamable HTTP transport. One connected
 * client per endpoint is kept and reused; one that fails is dropped, so the
 * next call connects afresh. Every failure becomes an error outcome for the
 * model (a message it can read), never an exception for the caller.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Logger } from "../../platform/index.js";

/** What a tool call came to, in the words the model reads. */
export interface McpOutcome {
  readonly content: string;
  readonly isError: boolean;
  readonly structuredJson: string;
}

/** A pool of MCP clients by endpoint. */
export interface McpClients {
  /** Calls `tool` at `endpoint` with `args`, giving up after `timeoutMs`. */
  call(endpoint: string, tool: string, args: Record<string, unknown>, timeoutMs: number): Promise<McpOutcome>;
  close(): Promise<void>;
}

type ContentPart = { type: string; text?: string };

/** Joins an MCP result's text parts; other parts are named by type, since the model reads text. */
export function contentText(content: readonly ContentPart[]): string {
  return content.map((c) => (c.type === "text" ? (c.text ?? "") : `[${c.type} content]`)).join("\n");
}

/** Creates the pool; `clientName` is how we introduce ourselves to plugin servers. */
export function createMcpClients(log: Logger, clientName = "switchyard-plugins"): McpClients {
  const clients = new Map<string, Promise<Client>>();

  function connected(endpoint: string): Promise<Client> {
    let c = clients.get(endpoint);
    if (c === undefined) {
      c = (async () => {
        const client = new Client({ name: clientName, version: "1.0.0" });
        await client.connect(new StreamableHTTPClientTransport(new URL(endpoint)));
        return client;
      })();
      clients.set(endpoint, c);
      c.catch(() => clients.delete(endpoint));
    }
    return c;
  }

  async function drop(endpoint: string): Promise<void> {
    const c = clients.get(endpoint);
    clients.delete(endpoint);
    await c?.then((client) => client.close()).catch(() => undefined);
  }

  return {
    async call(endpoint, tool, args, timeoutMs) {
      const started = Date.now();
      try {
        const client = await withTimeout(connected(endpoint), timeoutMs, "connecting to the plugin's server");
        const left = Math.max(1, timeoutMs - (Date.now() - started));
        const result = await client.callTool({ name: tool, arguments: args }, undefined, { timeout: left, signal: AbortSignal.timeout(left) });
        const content = contentText((result.content ?? []) as ContentPart[]);
        const structuredJson = result.structuredContent === undefined ? "" : JSON.stringify(result.structuredContent);
        return { content, isError: result.isError === true, structuredJson };
      } catch (err) {
        await drop(endpoint);
        const why = err instanceof Error ? err.message : String(err);
        const timedOut = Date.now() - started >= timeoutMs || /timed? ?out|aborted/i.test(why);
        log.warn({ endpoint: new URL(endpoint).host, tool, err: why }, "plugin tool call failed");
        return {
          content: timedOut ? `the tool ${tool} did not answer within ${timeoutMs} ms` : `the tool ${tool} could not be reached: ${why}`,
          isError: true,
          structuredJson: "",
        };
      }
    },
    async close() {
      await Promise.all([...clients.keys()].map(drop));
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out ${what}`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e: unknown) => (clearTimeout(t), reject(e)),
    );
  });
}
