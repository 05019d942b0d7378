/**
 * A gateway process for the memory measurement: app/main.ts as is, plus
 * a SIGUSR2 handler that collects garbage (node --expose-gc) and prints
 * process.memoryUsage() as one JSON line on stderr.
 */
process.on("SIGUSR2", () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  process.stderr.write(`MEM ${JSON.stringify(process.memoryUsage())}\n`);
});
await import("../../app/main.js");
