/**
 * `npm run envoy`: writes envoy/envoy.yaml, docker-compose.yml and
 * deploy/kubernetes/switchyard.yaml from the
 * contracts and services/index.ts. `npm run envoy:check`: validates
 * envoy/envoy.yaml, or the file named after `check` (exit 1 listing every
 * problem).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { checkEnvoyYaml } from "./check.js";
import { generateEdgeFiles } from "./files.js";
import { readEdgeConfig } from "./edge-config.js";
import { readTopology } from "./topology.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const command = process.argv[2] ?? "generate";

try {
  if (command === "generate") {
    const files = await generateEdgeFiles(root, process.env);
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), text);
      process.stdout.write(`wrote ${path}\n`);
    }
  } else if (command === "check") {
    const config = readEdgeConfig(process.env);
    const file = process.argv[3] ?? join(root, "envoy", "envoy.yaml");
    const problems = checkEnvoyYaml(readFileSync(file, "utf8"), {
      topology: await readTopology(root),
      issuer: config.issuer,
      audience: config.audience,
      allowedOrigins: config.allowedOrigins,
    });
    if (problems.length > 0) {
      process.stderr.write(`${file} has ${problems.length} problem(s):\n  ${problems.join("\n  ")}\n`);
      process.exit(1);
    }
    process.stdout.write(`${file} is valid: Envoy v3 schema and routing rules\n`);
  } else {
    process.stderr.write(`usage: envoy/cli.ts generate | check [file]\n`);
    process.exit(2);
  }
} catch (err) {
  process.stderr.write(`envoy: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
