/** The runtime itself: device, tensors, dtypes, limits, buffer pool, profiler, tidy. */
import {
  classifyAdapter,
  createGpu,
  defaultGpu,
  formatProfile,
  matmul,
  OpError,
  relu,
  Tensor,
  tidy,
} from "@cxr/kernels";
import { describe, expect, it, vi } from "vitest";
import { DEFAULT_DRAIN_EVERY, parseDrainEvery } from "../../packages/kernels/src/runtime/device.ts";
import { sizeClass } from "../../packages/kernels/src/runtime/pool.ts";

describe("device", () => {
  it("finds an adapter, classifies it and reports the optional features", async () => {
    const gpu = await defaultGpu();
    expect(["discrete", "integrated", "cpu", "unknown"]).toContain(gpu.kind);
    expect(gpu.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    for (const feature of gpu.features)
      expect(["shader-f16", "subgroups", "timestamp-query"]).toContain(feature);
  });

  it("classifies adapters by their description", () => {
    const info = (description: string) =>
      ({ vendor: "", architecture: "", device: "", description }) as unknown as GPUAdapterInfo;
    expect(classifyAdapter(info("llvmpipe (LLVM 15.0.6, 256 bits)"), false)).toBe("cpu");
    expect(classifyAdapter(info("NVIDIA H100 80GB HBM3"), false)).toBe("discrete");
    expect(classifyAdapter(info("Intel(R) Iris(R) Xe Graphics"), false)).toBe("integrated");
    expect(classifyAdapter(info("Something new"), true)).toBe("cpu");
  });
});

describe("periodic drain (Gpu.endStep, the Dawn long-run workaround)", () => {
  /** Counts forced collections: Bun.gc under Bun, a stand-in globalThis.gc under Node. */
  function countCollections(): { count(): number; restore(): void } {
    const runtime = globalThis as { Bun?: { gc(force: boolean): void }; gc?: () => void };
    if (runtime.Bun) {
      const spy = vi.spyOn(runtime.Bun, "gc");
      return { count: () => spy.mock.calls.length, restore: () => spy.mockRestore() };
    }
    const previous = runtime.gc;
    let calls = 0;
    runtime.gc = () => {
      calls++;
    };
    return {
      count: () => calls,
      restore: () => {
        runtime.gc = previous;
      },
    };
  }

  it("every drainEvery steps it submits and waits for the queue and forces one collection; 0 never", async () => {
    const gpu = await defaultGpu();
    expect(gpu.drainEvery).toBe(DEFAULT_DRAIN_EVERY);
    const collections = countCollections();
    const saved = gpu.drainEvery;
    try {
      gpu.drainEvery = 1;
      await gpu.endStep(); // whatever earlier tests left in the step count: start right after a drain
      gpu.drainEvery = 3;
      const drains = gpu.drainCount;
      const collected = collections.count();
      const x = Tensor.upload(gpu, [-1, 2, -3], [3]);
      const results: Tensor[] = [];
      const outcome: number[][] = [];
      for (let step = 1; step <= 7; step++) {
        const submitted = gpu.submitCount;
        results.push(relu(x)); // recorded, not submitted
        await gpu.endStep();
        const drained = step % 3 === 0;
        outcome.push([gpu.drainCount - drains, collections.count() - collected]);
        expect(gpu.submitCount > submitted, `step ${step}`).toBe(drained);
      }
      expect(outcome).toEqual([
        [0, 0],
        [0, 0],
        [1, 1],
        [1, 1],
        [1, 1],
        [2, 2],
        [2, 2],
      ]);
      gpu.drainEvery = 0;
      for (let step = 0; step < 5; step++) await gpu.endStep();
      expect(gpu.drainCount - drains).toBe(2);
      expect(Array.from(await results[6].download())).toEqual([0, 2, 0]);
      for (const tensor of [x, ...results]) tensor.release();
    } finally {
      gpu.drainEvery = saved;
      collections.restore();
    }
  });

  it("parses the interval from the environment or an option, refusing what is not a whole number >= 0", () => {
    expect(parseDrainEvery("16", "CXR_DRAIN_EVERY")).toBe(16);
    expect(parseDrainEvery("0", "CXR_DRAIN_EVERY")).toBe(0);
    expect(parseDrainEvery(4, "drainEvery")).toBe(4);
    for (const bad of ["-1", "1.5", "often", ""])
      expect(() => parseDrainEvery(bad, "CXR_DRAIN_EVERY")).toThrow(
        `CXR_DRAIN_EVERY: the drain interval must be a whole number of steps >= 0 (0 = never), got "${bad}"`,
      );
    expect(() => parseDrainEvery(-2, "drainEvery")).toThrow(/drainEvery: .*got "-2"/);
  });
});

describe("tensors", () => {
  it("round-trips f32, u32 and (where supported) f16 data", async () => {
    const gpu = await defaultGpu();
    const values = [1.5, -2, 0, 65504, 1e-3];
    expect(Array.from(await Tensor.upload(gpu, values, [5]).download())).toEqual(values.map(Math.fround));
    expect(Array.from(await Tensor.upload(gpu, [0, 7, 4000000], [3], "u32").download())).toEqual([
      0, 7, 4000000,
    ]);
    if (gpu.features.has("shader-f16")) {
      const half = await Tensor.upload(gpu, values, [5], "f16").download();
      expect(Array.from(half)).toEqual([1.5, -2, 0, 65504, 0.0010004043579101562]);
    }
  });

  it("refuses f16 on a device without shader-f16, naming the feature", async () => {
    const gpu = await createGpu({ disableFeatures: ["shader-f16"] });
    expect(() => Tensor.empty(gpu, [4], "f16")).toThrow(
      /tensor: dtype f16 needs the adapter feature 'shader-f16'/,
    );
    gpu.destroy();
  });

  it("refuses tensors larger than the adapter's largest storage buffer and bad shapes", async () => {
    const gpu = await defaultGpu();
    const limit = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
    const elements = Math.floor(limit / 4) + 1024;
    expect(() => Tensor.empty(gpu, [elements])).toThrow(OpError);
    expect(() => Tensor.empty(gpu, [elements])).toThrow(/more than this adapter's largest storage buffer/);
    expect(() => Tensor.empty(gpu, [3, 0])).toThrow(/tensor: invalid dimension 0 \(shape: \[3, 0\]\)/);
    expect(() => Tensor.upload(gpu, [1, 2, 3], [2, 2])).toThrow(
      /upload: data has 3 values but the shape holds 4/,
    );
    expect(() => Tensor.upload(gpu, [1.5], [1], "u32")).toThrow(/u32 tensor given 1.5/);
  });

  it("ops reject the wrong dtype, naming the op and the shapes", async () => {
    const gpu = await defaultGpu();
    const ids = Tensor.upload(gpu, [1, 2, 3, 4], [2, 2], "u32");
    const x = Tensor.upload(gpu, [1, 2, 3, 4], [2, 2]);
    expect(() => relu(ids)).toThrow(/relu: needs f32 input, got u32 \(x: \[2, 2\]\)/);
    expect(() => matmul(x, ids)).toThrow(/^matmul: .*u32/);
  });

  it("reports use after release", async () => {
    const gpu = await defaultGpu();
    const x = Tensor.upload(gpu, [1], [1]);
    x.release();
    expect(() => relu(x)).toThrow(/was used after release\(\)/);
  });
});

describe("buffer pool and tidy", () => {
  it("reuses released buffers of the same size class", async () => {
    const gpu = await defaultGpu();
    expect(sizeClass(1)).toBe(256);
    expect(sizeClass(3 << 20)).toBe(3 << 20);
    const first = Tensor.empty(gpu, [1000, 3]);
    first.release();
    const before = gpu.pool.snapshot();
    const second = Tensor.empty(gpu, [999, 3]);
    const after = gpu.pool.snapshot();
    expect(after.reuses).toBe(before.reuses + 1);
    expect(after.allocations).toBe(before.allocations);
    second.release();
  });

  it("tidy releases every temporary but the result", async () => {
    const gpu = await defaultGpu();
    const x = Tensor.upload(gpu, [-1, 2, -3], [3]);
    const inUse = gpu.pool.snapshot().inUseBytes;
    const y = tidy(() => relu(relu(relu(x))));
    expect(gpu.pool.snapshot().inUseBytes).toBe(inUse + 256);
    expect(Array.from(await y.download())).toEqual([0, 2, 0]);
    expect(x.released).toBe(false);
  });

  it("tidy releases what fn created when fn throws, rethrows, and keeps parameters and nested results", async () => {
    const gpu = await defaultGpu();
    const x = Tensor.upload(gpu, [-1, 2, -3], [3]);
    const start = gpu.pool.snapshot().inUseBytes;
    const failure = new Error("fn failed");
    let created: Tensor[] = [];
    expect(() =>
      tidy(() => {
        const a = relu(x);
        const b = relu(a);
        const inner = tidy(() => relu(relu(b))); // returned from the inner scope: the outer one owns it
        created = [a, b, inner];
        throw failure;
      }),
    ).toThrow(failure);
    expect(created.map((tensor) => tensor.released)).toEqual([true, true, true]);
    expect(gpu.pool.snapshot().inUseBytes).toBe(start);
    expect(x.released).toBe(false);
    // A throwing inner tidy inside a succeeding outer one: the inner temporaries are gone at once,
    // the outer scope goes on, and a parameter made inside passes up instead of being freed.
    let parameter: Tensor | null = null;
    const y = tidy(() => {
      expect(() =>
        tidy(() => {
          parameter = Tensor.upload(gpu, [1, 2, 3], [3]).trainable();
          relu(x);
          throw failure;
        }),
      ).toThrow(failure);
      expect(gpu.pool.snapshot().inUseBytes).toBe(start + 256);
      return relu(x);
    });
    expect((parameter as Tensor | null)?.released).toBe(false);
    expect(Array.from(await y.download())).toEqual([0, 2, 0]);
    expect(gpu.pool.snapshot().inUseBytes).toBe(start + 512);
    y.release();
    (parameter as Tensor | null)?.release();
    expect(gpu.pool.snapshot().inUseBytes).toBe(start);
    x.release();
  });
});

describe("profiler", () => {
  it("counts calls, FLOPs and bytes per kernel and variant, with GPU time where timestamps exist", async () => {
    const gpu = await createGpu({ profile: true });
    const a = Tensor.upload(gpu, new Float32Array(64 * 32).fill(1), [64, 32]);
    const b = Tensor.upload(gpu, new Float32Array(32 * 16).fill(2), [32, 16]);
    for (let i = 0; i < 3; i++) matmul(a, b, { variant: "naive" }).release();
    await gpu.sync();
    const row = gpu.profiler.rows().find((entry) => entry.name === "matmul");
    expect(row).toBeDefined();
    expect(row!.variant).toBe("naive");
    expect(row!.calls).toBe(3);
    expect(row!.flops).toBe(3 * 2 * 64 * 32 * 16);
    if (gpu.profiler.timing) expect(row!.gpuNanoseconds).toBeGreaterThan(0);
    const table = formatProfile(gpu.profiler.rows());
    expect(table).toMatch(/^kernel\s+variant\s+calls\s+ms\s+GFLOP\s+GFLOP\/s\s+GB\/s/);
    expect(table).toMatch(/matmul\s+naive\s+3/);
    gpu.destroy();
  });
});
