/**
 * What the two Redis test files share: Debian's redis-server (skipped when missing, except under
 * CI=true, where it must be installed), the runtime that spawns the worker processes, and a free
 * loopback port for each redis-server they start.
 */
import { existsSync } from "node:fs";
import { createServer } from "node:net";

export const REDIS = "/usr/bin/redis-server";
export const redisAvailable = existsSync(REDIS);
if (!redisAvailable && process.env.CI)
  throw new Error(`${REDIS} is missing: CI must install Debian's redis-server`);

/** Worker children run with the test's own runtime: Bun directly, Node through tsx. */
export const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.once("error", reject);
  });
}
