/**
 * Where a module finds the modules it calls: the same process when they run
 * here (`npm start` runs them all), else `<NAME>_URL`, which the production
 * shapes set from the declarations (compose: http://<name>:8080; Kubernetes:
 * the headless Service). Nothing here names a module: the names come from
 * the modules' own `calls`.
 */
import { ConfigError } from "./config.js";
import type { ServiceModule } from "./service.js";

/** The variable that says where module `name` serves, e.g. GATEWAY_URL. */
export function serviceUrlVariable(name: string): string {
  return `${name.toUpperCase()}_URL`;
}

/** `serviceUrl` for `caller`, in a process running `local` on `port`, reading `env`. */
export function createServiceUrls(caller: ServiceModule, local: readonly ServiceModule[], port: number, env: NodeJS.ProcessEnv): (name: string) => string {
  return (name) => {
    if (!(caller.calls ?? []).includes(name)) throw new Error(`module "${caller.name}" calls "${name}" without declaring it in \`calls\``);
    if (local.some((m) => m.name === name)) return `http://127.0.0.1:${port}`;
    const variable = serviceUrlVariable(name);
    const url = env[variable];
    if (url === undefined || url === "") throw new ConfigError([`${variable} is required: module "${caller.name}" calls ${name}, which does not run in this process; set it to where ${name} serves, e.g. http://${name}:8080`]);
    try {
      new URL(url);
    } catch {
      throw new ConfigError([`${variable}: expected a URL such as http://${name}:8080, got "${url}"`]);
    }
    return url;
  };
}
