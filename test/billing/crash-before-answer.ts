/**
 * Preloaded (`node --import`) into a platform process by the crash test: the
 * first time the process is about to answer 2xx to `POST /billing/webhook`,
 * that is after billing committed the event's effects and before a byte of
 * the answer leaves, the process SIGKILLs itself. Nothing in billing knows.
 */
import http from "node:http";

const writeHead = http.ServerResponse.prototype.writeHead;
http.ServerResponse.prototype.writeHead = function (this: http.ServerResponse, status: number, ...rest: unknown[]) {
  if (this.req?.url === "/billing/webhook" && status >= 200 && status < 300) process.kill(process.pid, "SIGKILL");
  return (writeHead as (...a: unknown[]) => http.ServerResponse).call(this, status, ...rest);
} as typeof writeHead;
