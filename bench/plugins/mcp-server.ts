/**
 * The MCP server process of bench/plugins: test/support/mcp-server.ts (the
 * official SDK's McpServer over Streamable HTTP) with one `echo` tool;
 * prints "port N" when it listens.
 *
 *   node --import tsx bench/plugins/mcp-server.ts
 */
import { startMcpServer } from "../../test/support/mcp-server.js";

const server = await startMcpServer({
  echo: { description: "Echoes its text.", run: (args) => ({ text: `echo: ${String(args.text)}` }) },
});
process.stdout.write(`port ${server.port}\n`);
process.once("SIGTERM", () => void server.close().then(() => process.exit(0)));
