/**
 * The package's public surface (packages/kernels/src/index.ts) names what it exports: WGSL sources,
 * cost models' internals and runtime plumbing stay in their modules.
 */
import * as kernels from "@cxr/kernels";
import { describe, expect, it } from "vitest";

describe("@cxr/kernels public API", () => {
  const names = Object.keys(kernels);

  it("exports no WGSL source but the kernel-authoring helper, and no runtime plumbing", () => {
    expect(names.filter((name) => name.endsWith("_WGSL"))).toEqual(["LINEAR_INDEX_WGSL"]);
    expect(names.filter((name) => /Source$|_TEMPLATE$/.test(name))).toEqual([]);
    for (const internal of ["STORAGE_USAGE", "BufferPool", "UniformArena", "waitForGpu", "withoutDawnNoise"])
      expect(names).not.toContain(internal);
  });

  it("exports the tensors, ops with their references, layers, modules, profiler and device", () => {
    for (const name of [
      "Tensor",
      "tidy",
      "createGpu",
      "defaultGpu",
      "backward",
      "matmul",
      "matmulReference",
      "conv2d",
      "softmax",
      "attention",
      "Linear",
      "Module",
      "readSafetensors",
      "formatProfile",
      "AdamW",
      "launch",
    ])
      expect(names).toContain(name);
  });
});
