// Vite builds the console from web/ into web/dist (`npm run web:build`);
// `npx vite --config web/vite.config.ts` serves it with live reload.
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const webRoot = dirname(fileURLToPath(import.meta.url));

export default defineConfig({
  root: webRoot,
  base: "/",
  build: { outDir: resolve(webRoot, "dist"), emptyOutDir: true, target: "es2022", sourcemap: false },
  // The console imports the generated stubs from ../gen.
  server: { fs: { allow: [resolve(webRoot, "..")] } },
});
