import {
  backward,
  defaultGpu,
  noGrad,
  OpError,
  Tensor,
  timestepEmbedding,
  timestepEmbeddingReference,
  timestepFrequencies,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { expectClose, finiteDifferenceGradient, randomValues } from "./helpers.ts";

// Arguments reach |t f| ~ 1000 rad (12345 in one case). The reference rounds them to f32 where PyTorch
// does, so what remains is the kernel's own reduction and polynomials: a few f32 ulps of [-1, 1].
const tolerance = (_maxTimestep: number) => ({ atol: 5e-7, rtol: 0 });

describe("timestepEmbedding", () => {
  it.each([
    // [timesteps, dim, options]: one timestep at dim 2; SD's 320; odd dims (padding column) with and
    // without the flip and shift; 300 timesteps; a negative and a far out-of-range timestep.
    [[0], 2, { downscaleFreqShift: 0 }],
    [[1, 999, 500.5, 17], 320, { flipSinToCos: true, downscaleFreqShift: 0 }],
    [[3, 250], 33, { flipSinToCos: false, downscaleFreqShift: 1 }],
    [[999, 0, 1, 998, 123, 4, 777], 7, { flipSinToCos: true, downscaleFreqShift: 0, scale: 0.5 }],
    [
      Array.from({ length: 300 }, (_, index) => (index * 37) % 1000),
      128,
      { flipSinToCos: true, downscaleFreqShift: 0 },
    ],
    [[-5, 12345.5], 16, { flipSinToCos: true, downscaleFreqShift: 0 }],
  ])("case %#: forward and gradient against float64", async (timesteps, dim, options) => {
    const gpu = await defaultGpu();
    const t = Tensor.upload(gpu, Float32Array.from(timesteps), [timesteps.length]).trainable();
    const output = timestepEmbedding(t, dim, options);
    expect(output.shape).toEqual([timesteps.length, dim]);
    const expected = timestepEmbeddingReference.forward(Float32Array.from(timesteps), dim, options);
    const maxT = Math.max(...timesteps.map(Math.abs));
    expectClose(await output.download(), expected, tolerance(maxT), "embedding");
    if (dim % 2 === 1) {
      const values = await output.download();
      for (let row = 0; row < timesteps.length; row++) expect(values[row * dim + dim - 1]).toBe(0);
    }
    const gy = randomValues(output.size, 11);
    backward(output, Tensor.upload(gpu, Float32Array.from(gy), output.shape));
    const expectedGrad = timestepEmbeddingReference.backward(Float32Array.from(timesteps), dim, gy, options);
    // Each gradient sums dim/2 terms of size up to scale * f_j * |gy|.
    expectClose(
      await t.grad!.download(),
      expectedGrad,
      { atol: 2e-6 * dim + maxT * 6e-8 * dim, rtol: 1e-5 },
      "gradient",
    );
  });

  it("reference gradient agrees with finite differences", () => {
    const timesteps = new Float64Array([0.5, 3.25, 40]);
    const dim = 9;
    const options = { flipSinToCos: true, downscaleFreqShift: 0 };
    const gy = randomValues(timesteps.length * dim, 3);
    const numeric = finiteDifferenceGradient(
      ([t]) => timestepEmbeddingReference.forward(t, dim, options, false),
      [timesteps],
      gy,
      0,
    );
    expectClose(
      timestepEmbeddingReference.backward(timesteps, dim, gy, options, false),
      numeric,
      { atol: 1e-6, rtol: 1e-6 },
      "fd",
    );
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
      tolerance(8),
      "with table",
    );
  });

  it("bad input names the op", async () => {
    const gpu = await defaultGpu();
    const t = Tensor.upload(gpu, new Float32Array([1, 2]), [2]);
    expect(() => timestepEmbedding(t, 1)).toThrow(OpError);
    expect(() => timestepEmbedding(t, 2, { downscaleFreqShift: 1 })).toThrow(/minus downscaleFreqShift/);
    expect(() => timestepEmbedding(Tensor.upload(gpu, new Float32Array(4), [2, 2]), 8)).toThrow(
      /timestepEmbedding/,
    );
    const wrong = Tensor.upload(gpu, new Float32Array(3), [3]);
    expect(() => timestepEmbedding(t, 8, {}, wrong)).toThrow(/frequencies must be f32 \[4\]/);
  });
});
