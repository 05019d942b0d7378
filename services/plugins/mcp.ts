/**
 * Calls server-side plugin tools over the Model Context Protocol with the
 * official SDK's client and its Streamable HTTP transport. One connected
 * client per endpoint is kept and reused; one that fails is dropped, so the
 * next call connects afresh. Every failure becomes an error outcome for the
 * model (a message it can read), never an exception for the caller.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
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

  function connected(endpoint: string, timeoutMs: number): Promise<Client> {
    let c = clients.get(endpoint);
    if (c === undefined) {
      c = (async () => {
        const client = new Client({ name: clientName, version: "1.0.0" });
        // Bounded, so a server that never answers the handshake does not hold a pending client for the SDK's 60 s.
        await client.connect(new StreamableHTTPClientTransport(new URL(endpoint)), { timeout: timeoutMs });
        return client;
      })();
      clients.set(endpoint, c);
      const mine = c;
      c.catch(() => clients.get(endpoint) === mine && clients.delete(endpoint));
    }
    return c;
  }

  /** Forgets the endpoint's client and closes it in the background (a caller never waits for that). */
  function drop(endpoint: string): Promise<void> {
    const c = clients.get(endpoint);
    clients.delete(endpoint);
    return c === undefined ? Promise.resolve() : c.then((client) => client.close()).catch(() => undefined);
  }

  return {
    async call(endpoint, tool, args, timeoutMs) {
      const started = Date.now();
      let connectedYet = false;
      try {
        const client = await withTimeout(connected(endpoint, timeoutMs), timeoutMs, "connecting to the plugin's server");
        connectedYet = true;
        const left = Math.max(1, timeoutMs - (Date.now() - started));
        const result = await client.callTool({ name: tool, arguments: args }, undefined, { timeout: left, signal: AbortSignal.timeout(left) });
        const content = contentText((result.content ?? []) as ContentPart[]);
        const structuredJson = result.structuredContent === undefined ? "" : JSON.stringify(result.structuredContent);
        return { content, isError: result.isError === true, structuredJson };
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        const timedOut = Date.now() - started >= timeoutMs || /timed? ?out|aborted/i.test(why);
        // A call that ran out of time, or that the server answered with an error, says nothing bad about the
        // connection, which other calls in flight share; anything else may be a dead connection or session.
        if (!connectedYet || !(timedOut || answeredByServer(err))) void drop(endpoint);
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

/** Whether `err` is a JSON-RPC error the server sent (it answered, so its connection works). */
function answeredByServer(err: unknown): boolean {
  return err instanceof McpError && err.code !== ErrorCode.ConnectionClosed && err.code !== ErrorCode.RequestTimeout;
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
