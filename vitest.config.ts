import { defineConfig } from "vitest/config";

// GPU tests share one lavapipe device per worker; two workers match the two-core CI machines.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    maxWorkers: 2,
    testTimeout: 180_000,
    hookTimeout: 180_000,
  },
});
