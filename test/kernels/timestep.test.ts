/**
 * The timestep embedding (ops/timestep/) as a checkOp table: forward and gradient against the float64
 * reference (which rounds the arguments to f32 where PyTorch does), the reference gradient against
 * finite differences, bad input; then the frequency table, a table kept on the GPU, and the dump.
 */
import {
  backward,
  defaultGpu,
  noGrad,
  Tensor,
  timestepEmbedding,
  timestepEmbeddingReference,
  timestepFrequencies,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { TIMESTEP_KERNELS } from "../../packages/kernels/src/ops/timestep/index.ts";
import {
  type TimestepParams,
  timestepOpReference,
} from "../../packages/kernels/src/ops/timestep/reference.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { compiledWhile } from "./compiled.ts";
import { expectClose } from "./helpers.ts";

function timesteps(
  reason: string,
  values: number[],
  dim: number,
  options: TimestepParams["options"],
  extra: Partial<OpCase<TimestepParams>> = {},
): OpCase<TimestepParams> {
  return { reason, params: { dim, options }, inputs: [[values.length]], values: [values], ...extra };
}

const cases: OpCase<TimestepParams>[] = [
  timesteps("one timestep at dim 2", [0], 2, { downscaleFreqShift: 0 }),
  timesteps("Stable Diffusion's 320, flipped", [1, 999, 500.5, 17], 320, {
    flipSinToCos: true,
    downscaleFreqShift: 0,
  }),
  timesteps("odd dim (a zero padding column), shift 1", [3, 250], 33, {
    flipSinToCos: false,
    downscaleFreqShift: 1,
  }),
  timesteps("odd dim 7, flipped, scale 0.5", [999, 0, 1, 998, 123, 4, 777], 7, {
    flipSinToCos: true,
    downscaleFreqShift: 0,
    scale: 0.5,
  }),
  timesteps(
    "300 timesteps at dim 128",
    Array.from({ length: 300 }, (_, index) => (index * 37) % 1000),
    128,
    { flipSinToCos: true, downscaleFreqShift: 0 },
  ),
  timesteps("a negative and a far out-of-range timestep", [-5, 12345.5], 16, {
    flipSinToCos: true,
    downscaleFreqShift: 0,
  }),
  {
    reason: "small fractional timesteps, for finite differences (exact arguments)",
    params: { dim: 9, options: { flipSinToCos: true, downscaleFreqShift: 0 }, roundArguments: false },
    inputs: [[3]],
    values: [[0.5, 3.25, 40]],
    finiteDifferences: true,
  },
];

const badInputs: BadInputCase[] = [
  {
    reason: "dim below 2",
    run: (device) => timestepEmbedding(Tensor.upload(device, new Float32Array([1, 2]), [2]), 1),
    throws: "timestepEmbedding: dim must be an integer >= 2, got 1",
  },
  {
    reason: "half the dim minus the shift is 0",
    run: (device) =>
      timestepEmbedding(Tensor.upload(device, new Float32Array([1, 2]), [2]), 2, { downscaleFreqShift: 1 }),
    throws: "timestepEmbedding: half the dimension (1) minus downscaleFreqShift (1) is 0",
  },
  {
    reason: "timesteps of rank 2",
    run: (device) => timestepEmbedding(Tensor.upload(device, new Float32Array(4), [2, 2]), 8),
    throws: "timestepEmbedding: timesteps must be an f32 tensor [batch] (timesteps: [2, 2])",
  },
  {
    reason: "a frequency table of the wrong length",
    run: (device) =>
      timestepEmbedding(
        Tensor.upload(device, new Float32Array([1, 2]), [2]),
        8,
        {},
        Tensor.upload(device, new Float32Array(3), [3]),
      ),
    throws: "timestepEmbedding: frequencies must be f32 [4] (frequencies: [3])",
  },
];

checkOp(
  {
    name: "timestepEmbedding",
    variants: ["default"],
    reference: timestepOpReference,
    run: ([t], { dim, options }) => timestepEmbedding(t, dim, options),
    // Arguments reach |t f| ~ 1000 rad (12345 in one case). With arguments rounded to f32 as PyTorch
    // rounds them, what remains is the kernel's own reduction and polynomials: a few f32 ulps of
    // [-1, 1]. Exact (unrounded) arguments differ from the kernel's by up to |t f| * 2^-24.
    // Each gradient sums dim/2 terms of size up to scale * f_j * |gy|.
    tolerance: ({ params, values }) => {
      const maxT = Math.max(...(values?.[0] ?? [0]).map(Math.abs));
      const roundingSlack = params.roundArguments === false ? maxT * 1.2e-7 : 0;
      return {
        forward: { atol: 5e-7 + roundingSlack, rtol: 0 },
        backward: {
          atol: 2e-6 * params.dim + maxT * 6e-8 * params.dim + roundingSlack * params.dim,
          rtol: 1e-5,
        },
      };
    },
  },
  cases,
  badInputs,
);

describe("timestepEmbedding: the rest", () => {
  it("output is [batch, dim] and an odd dim's padding column is exactly 0", async () => {
    const gpu = await defaultGpu();
    for (const [values, dim] of [
      [[3, 250], 33],
      [[999, 0, 1, 998, 123, 4, 777], 7],
    ] as const) {
      const output = timestepEmbedding(Tensor.upload(gpu, Float32Array.from(values), [values.length]), dim, {
        downscaleFreqShift: 0,
      });
      expect(output.shape).toEqual([values.length, dim]);
      const data = await output.download();
      for (let row = 0; row < values.length; row++) expect(data[row * dim + dim - 1]).toBe(0);
      output.release();
    }
  });

  it("frequencies follow diffusers: exp(-ln(10000) j / (half - shift)), rounded to f32", () => {
    const f = timestepFrequencies(8, { downscaleFreqShift: 0 });
    expect(f.length).toBe(4);
    expect(f[0]).toBe(1);
    expect(f[2]).toBeCloseTo(Math.exp((-Math.log(10000) * 2) / 4), 6);
    const shifted = timestepFrequencies(8, { downscaleFreqShift: 1 });
    expect(shifted[3]).toBeCloseTo(1 / 10000, 9);
  });

  it("passes a frequency table kept on the GPU, records nothing under noGrad", async () => {
    const gpu = await defaultGpu();
    const table = Tensor.upload(gpu, timestepFrequencies(6, { flipSinToCos: true }), [3]);
    const t = Tensor.upload(gpu, new Float32Array([7, 8]), [2]).trainable();
    const output = noGrad(() => timestepEmbedding(t, 6, { flipSinToCos: true }, table));
    expect(output.node).toBeNull();
    expectClose(
      await output.download(),
      timestepEmbeddingReference.forward([7, 8], 6, { flipSinToCos: true }),
      { atol: 5e-7, rtol: 0 },
      "with table",
    );
  });

  it("the WGSL that `cxr kernels dump timestep` prints is what runs", async () => {
    const compiled = await compiledWhile(async (device) => {
      const t = Tensor.upload(device, new Float32Array([1, 2]), [2]).trainable();
      const y = timestepEmbedding(t, 8);
      backward(y, Tensor.upload(device, new Float32Array(16).fill(1), [2, 8]));
      await t.grad!.download();
    });
    expect(compiled).toEqual([TIMESTEP_KERNELS.default.forward, TIMESTEP_KERNELS.default.backward]);
    expect(dumpKernelSources({ op: "timestep", pass: "backward" })).toBe(
      `// timestep / default / backward${TIMESTEP_KERNELS.default.backward}\n`,
    );
  });
});
