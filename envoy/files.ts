/**
 * The generated edge files of a repository, by path: envoy/envoy.yaml,
 * docker-compose.yml with the examples of each module's own file
 * (secrets/<name>.env.example) and deploy/kubernetes/switchyard.yaml, all
 * from one topology and one edge configuration.
 */
import { corsAllowedHeaders, corsAllowedMethods, corsExposedHeaders } from "../platform/cors.js";
import { buildCompose, moduleEnvExamples, renderComposeYaml } from "./compose.js";
import { readEdgeConfig } from "./edge-config.js";
import { buildEnvoyConfig, renderEnvoyYaml } from "./generate.js";
import { buildKubernetes, renderKubernetesYaml } from "./kubernetes.js";
import { readTopology } from "./topology.js";

/** Generates the edge files of the repository at `root` with the variables in `source`. */
export async function generateEdgeFiles(root: string, source: NodeJS.ProcessEnv = process.env): Promise<Record<string, string>> {
  const topology = await readTopology(root);
  const config = readEdgeConfig(source);
  const cors = { allowedHeaders: corsAllowedHeaders, allowedMethods: corsAllowedMethods, exposedHeaders: corsExposedHeaders };
  const envoyYaml = renderEnvoyYaml(buildEnvoyConfig(topology, config, cors));
  return {
    "envoy/envoy.yaml": envoyYaml,
    "docker-compose.yml": renderComposeYaml(buildCompose(topology, config)),
    "deploy/kubernetes/switchyard.yaml": renderKubernetesYaml(buildKubernetes(topology, config, envoyYaml)),
    ...moduleEnvExamples(topology),
  };
}
