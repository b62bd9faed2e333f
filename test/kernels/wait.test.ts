/**
 * Waiting for the GPU (runtime/wait.ts): the timer mode really replaces Dawn's setImmediate loop
 * during a wait (Dawn's native tick goes through our wrapper and is throttled after the spin window),
 * leaves other callbacks and the global alone, and gives the same results as the busy mode.
 */
import { defaultGpu, type Gpu, matmul, parseWaitMode, Tensor, type WaitMode, waitStats } from "@cxr/kernels";
import { afterEach, describe, expect, it } from "vitest";
import { randomValues } from "./helpers.ts";

const N = 384;
let saved: Gpu["waitPolicy"] | null = null;

async function withMode(mode: WaitMode): Promise<Gpu> {
  const gpu = await defaultGpu();
  saved ??= { ...gpu.waitPolicy };
  gpu.waitPolicy = { mode, spinMs: 1, intervalMs: 1 };
  return gpu;
}

afterEach(async () => {
  if (saved) (await defaultGpu()).waitPolicy = saved;
  saved = null;
});

/** A product that keeps lavapipe busy for tens of milliseconds, downloaded under `mode`. */
async function product(mode: WaitMode): Promise<{ values: Float32Array; ms: number }> {
  const gpu = await withMode(mode);
  const a = Tensor.upload(gpu, Float32Array.from(randomValues(N * N, 11)), [N, N]);
  const b = Tensor.upload(gpu, Float32Array.from(randomValues(N * N, 12)), [N, N]);
  await gpu.sync();
  const started = performance.now();
  const c = matmul(matmul(a, b), b);
  const values = await c.download();
  const ms = performance.now() - started;
  for (const tensor of [a, b, c]) tensor.release();
  return { values, ms };
}

describe("waiting for the GPU", () => {
  it("timer mode routes Dawn's native tick through the throttle, at most one tick per interval after the spin", async () => {
    await product("timer"); // compile the shaders first
    const before = waitStats();
    const { ms } = await product("timer");
    const after = waitStats();
    expect(after.waits).toBeGreaterThan(before.waits);
    expect(after.nativeTicks).toBeGreaterThan(before.nativeTicks);
    const throttled = after.throttledTicks - before.throttledTicks;
    // The second wait (the download) takes longer than the 1 ms spin on lavapipe and on most GPUs;
    // where it does not, nothing was throttled and nothing needs to be.
    if (ms > 5) expect(throttled).toBeGreaterThan(0);
    expect(throttled).toBeLessThanOrEqual(Math.ceil(ms) + 2);
  });

  it("busy mode leaves Dawn's loop alone, and both modes give identical results", async () => {
    const timer = await product("timer");
    const before = waitStats();
    const busy = await product("busy");
    const after = waitStats();
    expect(after.waits).toBeGreaterThan(before.waits);
    expect(after.nativeTicks).toBe(before.nativeTicks);
    expect(Array.from(busy.values)).toEqual(Array.from(timer.values));
  });

  it("passes other callbacks through and restores setImmediate after the wait", async () => {
    const gpu = await withMode("timer");
    const original = globalThis.setImmediate;
    let swapped = false;
    let ranEarly = false;
    const x = Tensor.upload(gpu, Float32Array.from(randomValues(N * N, 13)), [N, N]);
    const y = matmul(x, x);
    await gpu.wait(async () => {
      swapped = globalThis.setImmediate !== original;
      const ran = new Promise<void>((resolve) => globalThis.setImmediate(() => resolve()));
      const done = gpu.device.queue.onSubmittedWorkDone();
      gpu.flush();
      await ran;
      ranEarly = true;
      await done;
    });
    expect(swapped).toBe(true);
    expect(ranEarly).toBe(true);
    expect(globalThis.setImmediate).toBe(original);
    for (const tensor of [x, y]) tensor.release();
  });

  it("names the source of a bad wait mode", () => {
    expect(parseWaitMode("busy", "CXR_WAIT")).toBe("busy");
    expect(() => parseWaitMode("spin", "CXR_WAIT")).toThrow(
      /CXR_WAIT: wait mode must be one of busy, timer, got "spin"/,
    );
  });
});
