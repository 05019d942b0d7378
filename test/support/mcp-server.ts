/**
 * A small MCP server for tests, built with the official SDK
 * (@modelcontextprotocol/sdk: McpServer over the Streamable HTTP transport,
 * stateless), so our client meets the real wire protocol. Each tool is
 * scripted by the test; every call is recorded.
 */
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { z } from "zod";

/** What a scripted tool answers. */
export interface ScriptedResult {
  readonly text: string;
  readonly isError?: boolean;
  readonly structured?: Record<string, unknown>;
}

/** A scripted tool: its description and what it does with the arguments. */
export interface ScriptedTool {
  readonly description: string;
  run(args: Record<string, unknown>, signal: AbortSignal): ScriptedResult | Promise<ScriptedResult>;
}

/** A running test MCP server. */
export interface TestMcpServer {
  /** Its endpoint, e.g. http://127.0.0.1:PORT/mcp. */
  readonly url: string;
  readonly port: number;
  /** Every tools/call received: tool name and arguments, in order. */
  readonly calls: { tool: string; args: Record<string, unknown> }[];
  close(): Promise<void>;
}

/** Starts the server with `tools` on a free loopback port. */
export async function startMcpServer(tools: Record<string, ScriptedTool>): Promise<TestMcpServer> {
  const calls: TestMcpServer["calls"] = [];
  const newServer = () => {
    const server = new McpServer({ name: "switchyard-test-mcp", version: "1.0.0" });
    for (const [name, tool] of Object.entries(tools)) {
      server.registerTool(name, { description: tool.description, inputSchema: { text: z.string().optional(), n: z.number().optional() } }, async (args, extra) => {
        calls.push({ tool: name, args: args as Record<string, unknown> });
        const r = await tool.run(args as Record<string, unknown>, extra.signal);
        return { content: [{ type: "text" as const, text: r.text }], isError: r.isError ?? false, ...(r.structured ? { structuredContent: r.structured } : {}) };
      });
    }
    return server;
  };
  const httpServer = http.createServer(async (req, res) => {
    if (req.url !== "/mcp") {
      res.writeHead(404).end();
      return;
    }
    if (req.method !== "POST") {
      res.writeHead(405, { allow: "POST" }).end(); // stateless: no server-initiated stream
      return;
    }
    const server = newServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on("close", () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res);
  });
  // Idle keep-alive sockets outlive the client's own idle timeout, so a busy client never reuses one the server is closing.
  httpServer.keepAliveTimeout = 65_000;
  await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", r));
  const port = (httpServer.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    port,
    calls,
    close: () =>
      new Promise((r) => {
        httpServer.closeAllConnections();
        httpServer.close(() => r());
      }),
  };
}
