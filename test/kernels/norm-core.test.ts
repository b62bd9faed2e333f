/**
 * The shared normalisation core (ops/norm-core/): the variant choice and the work split, as pure
 * functions of adapter kind and shape (no GPU). The kernels themselves are checked through group,
 * batch and layer norm against their float64 references (groupnorm/batchnorm/layernorm.test.ts).
 */
import { describe, expect, it } from "vitest";
import {
  accessStyleOf,
  chooseMomentsVariant,
  chooseNormVariant,
  FUSED_NORM_MIN_STATISTICS,
  loadsPerInvocation,
  planMoments,
  rowSplit,
} from "../../packages/kernels/src/ops/norm-core/index.ts";
import { lanesFor } from "../../packages/kernels/src/ops/norm-core/vectors.ts";

const cpu = { kind: "cpu" } as const;
const discrete = { kind: "discrete" } as const;
const integrated = { kind: "integrated" } as const;

describe("norm core: choice and split (no GPU needed)", () => {
  it("chooses workgroup statistics on GPUs, fused with enough statistics on the CPU adapter", () => {
    expect(chooseMomentsVariant(cpu)).toBe("cpu-chunked");
    expect(chooseMomentsVariant(discrete)).toBe("gpu-workgroup");
    expect(chooseMomentsVariant(integrated)).toBe("gpu-workgroup");
    expect(FUSED_NORM_MIN_STATISTICS).toBe(32);
    expect(chooseNormVariant(cpu, 32)).toBe("cpu-fused");
    expect(chooseNormVariant(cpu, 31)).toBe("cpu-chunked");
    expect(chooseNormVariant(discrete, 4096)).toBe("gpu-workgroup");
  });

  it("derives the access style from the variant, else from the adapter", () => {
    expect(accessStyleOf(discrete, "cpu-chunked")).toBe("cpu");
    expect(accessStyleOf(discrete, "cpu-fused")).toBe("cpu");
    expect(accessStyleOf(cpu, "gpu-workgroup")).toBe("gpu");
    expect(accessStyleOf(cpu, "naive")).toBe("cpu");
    expect(accessStyleOf(discrete, "naive")).toBe("gpu");
    expect(accessStyleOf(integrated, undefined)).toBe("gpu");
  });

  it("loads vec4 only when rows are a multiple of 4 long", () => {
    expect(lanesFor(8)).toBe(4);
    expect(lanesFor(7)).toBe(1);
    expect(lanesFor(1)).toBe(1);
  });

  it("splits statistics into chunks of 64 to 1024 loads (CPU, whatever the row count) or 256-wide workgroups (GPU)", () => {
    // The 64x64 UNet level, groups of 40960 values (10240 vec4 loads): 160 chunks of 64, for one
    // group as for 2 x 32 or 4096 (the split never depends on the row count: batch invariance).
    for (const rows of [1, 64, 4096]) {
      expect(planMoments(rows, 40960, "cpu-chunked"), `rows ${rows}`).toEqual({
        variant: "cpu-chunked",
        lanes: 4,
        rowUnits: 10240,
        chunks: 160,
        chunkUnits: 64,
      });
    }
    // Beyond 256 chunks of 64 the chunks grow, up to 1024 loads, then their number grows again.
    expect(planMoments(3, 4 * 32768, "cpu-chunked")).toMatchObject({ chunks: 256, chunkUnits: 128 });
    expect(planMoments(3, 4 * 1024 * 1024, "cpu-chunked")).toMatchObject({ chunks: 1024, chunkUnits: 1024 });
    expect(planMoments(1, 40960, "gpu-workgroup").chunks).toBe(40);
    // Short rows: one chunk each, however many.
    expect(planMoments(4096, 4, "cpu-chunked").chunks).toBe(1);
    expect(planMoments(2, 256, "cpu-chunked").chunks).toBe(1);
    // A long odd row: scalar loads.
    expect(planMoments(1, 5003, "cpu-chunked")).toMatchObject({ lanes: 1, rowUnits: 5003, chunks: 79 });
  });

  it("splits rows contiguously on the CPU adapter and interleaved on GPUs", () => {
    expect(rowSplit("cpu", 1, 1024)).toEqual({ chunks: 16, chunkStep: 64, unitStep: 1, span: 64 });
    expect(rowSplit("cpu", 640, 1024)).toEqual({ chunks: 1, chunkStep: 1024, unitStep: 1, span: 1024 });
    expect(rowSplit("gpu", 1, 1024)).toEqual({ chunks: 1024, chunkStep: 1, unitStep: 1024, span: 1024 });
    expect(loadsPerInvocation("cpu", 1000)).toBe(256);
    expect(loadsPerInvocation("cpu", 1 << 20)).toBe(2048);
    expect(loadsPerInvocation("gpu", 1 << 20)).toBe(1);
  });
});
