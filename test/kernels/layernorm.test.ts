import {
  backward,
  type LayerNormVariant,
  layerNorm,
  layerNormReference,
  noGrad,
  OpError,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

const VARIANTS: LayerNormVariant[] = ["cpu-chunked", "gpu-workgroup"];

interface Case {
  shape: number[];
  affine: boolean;
}

const CASES: Case[] = [
  { shape: [1], affine: true }, // D = 1: variance 0, y = beta, dx = 0
  { shape: [3, 7], affine: true }, // odd D: scalar loads
  { shape: [2, 3, 8], affine: false }, // vec4 loads, no gamma/beta
  { shape: [5, 1, 12], affine: true },
  { shape: [1, 5003], affine: true }, // one long odd row: several chunks
  { shape: [4096, 4], affine: true }, // many short rows: gamma/beta sums over 4096 rows
  { shape: [2, 1024, 320], affine: true }, // the 64x64 UNet's 32x32 transformer tokens, D = 320
];

/** Statistics over D elements err ~ sqrt(D) ulps; gamma/beta gradients sum over `rows` rows. */
function tolerance(width: number, rows: number) {
  const elementwise = { atol: 5e-8 * Math.sqrt(width) + 1e-6, rtol: 1e-5 };
  return { elementwise, parameters: { atol: 1e-7 * rows + 2e-6, rtol: 1e-5 } };
}

describe.each(VARIANTS)("layerNorm %s", (variant) => {
  it.each(CASES)("forward and backward match the float64 reference: %j", async ({ shape, affine }) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const width = shape.at(-1)!;
    const seed = 17 + width;
    const x = asFloat32(randomValues(size, seed, 2).map((value) => value - 0.3));
    const gamma = affine ? asFloat32(randomValues(width, seed + 1).map((value) => 1 + 0.3 * value)) : null;
    const beta = affine ? asFloat32(randomValues(width, seed + 2)) : null;
    const gradOutput = asFloat32(randomValues(size, seed + 3));
    const xTensor = await upload(x, shape, true);
    const gammaTensor = gamma ? await upload(gamma, [width], true) : null;
    const betaTensor = beta ? await upload(beta, [width], true) : null;
    const y = layerNorm(xTensor, gammaTensor, betaTensor, 1e-5, { variant });
    const tol = tolerance(width, size / width);
    const label = `layerNorm ${variant} [${shape}]`;
    expectClose(
      await y.download(),
      layerNormReference.forward(x, width, gamma, beta, 1e-5).y,
      tol.elementwise,
      `${label} forward`,
    );
    backward(y, await upload(gradOutput, shape));
    const expected = layerNormReference.backward(x, width, gamma, gradOutput, 1e-5);
    // dx is rstd times O(1) terms that cancel, so its rounding scales with the row's rstd (large
    // for short rows of nearly equal values): compare dx / rstd.
    const { rstd } = layerNormReference.forward(x, width, gamma, beta, 1e-5);
    const perRstd = (values: ArrayLike<number>) =>
      Float64Array.from(values, (value, index) => value / rstd[Math.floor(index / width)]);
    expectClose(
      perRstd(await xTensor.grad!.download()),
      perRstd(expected.gradInput),
      tol.elementwise,
      `${label} dx / rstd`,
    );
    if (gammaTensor) {
      expectClose(await gammaTensor.grad!.download(), expected.gradGamma, tol.parameters, `${label} dgamma`);
      expectClose(await betaTensor!.grad!.download(), expected.gradBeta, tol.parameters, `${label} dbeta`);
    }
    for (const tensor of [xTensor, gammaTensor, betaTensor, y]) tensor?.release();
  });

  it("gives gamma alone its gradient when only gamma is trainable", async () => {
    const shape = [6, 10];
    const x = asFloat32(randomValues(60, 3));
    const gamma = asFloat32(randomValues(10, 4));
    const gradOutput = asFloat32(randomValues(60, 5));
    const gammaTensor = await upload(gamma, [10], true);
    const y = layerNorm(await upload(x, shape), gammaTensor, null, 1e-5, { variant });
    backward(y, await upload(gradOutput, shape));
    expectClose(
      await gammaTensor.grad!.download(),
      layerNormReference.backward(x, 10, gamma, gradOutput).gradGamma,
      { atol: 5e-6, rtol: 1e-5 },
      "dgamma only",
    );
  });
});

describe("layerNorm reference", () => {
  it("backward agrees with finite differences (x, gamma, beta)", () => {
    const width = 7;
    const x = randomValues(35, 21, 1.5);
    const gamma = randomValues(width, 22).map((value) => 1 + 0.5 * value);
    const beta = randomValues(width, 23);
    const gradOutput = randomValues(35, 24);
    const forward = ([xs, gammas, betas]: Float64Array[]) =>
      layerNormReference.forward(xs, width, gammas, betas, 1e-5).y;
    const analytic = layerNormReference.backward(x, width, gamma, gradOutput, 1e-5);
    const inputs = [x, gamma, beta];
    const fd = { atol: 1e-6, rtol: 1e-5 };
    expectClose(analytic.gradInput, finiteDifferenceGradient(forward, inputs, gradOutput, 0), fd, "fd dx");
    expectClose(
      analytic.gradGamma,
      finiteDifferenceGradient(forward, inputs, gradOutput, 1),
      fd,
      "fd dgamma",
    );
    expectClose(analytic.gradBeta, finiteDifferenceGradient(forward, inputs, gradOutput, 2), fd, "fd dbeta");
  });
});

describe("layerNorm bad input", () => {
  it("names the op and the shapes", async () => {
    const x = await upload(randomValues(24, 1), [4, 6]);
    const gamma = await upload(randomValues(4, 2), [4]);
    expect(() => layerNorm(x, gamma)).toThrow(OpError);
    expect(() => layerNorm(x, gamma)).toThrow(
      "layerNorm: gamma must have shape [6] (the last axis of x) (x: [4, 6], gamma: [4])",
    );
    const beta = await upload(randomValues(24, 3), [4, 6]);
    expect(() => layerNorm(x, null, beta)).toThrow(/^layerNorm: beta must have shape \[6\]/);
    expect(() => layerNorm(x, null, null, Number.NaN)).toThrow(
      /^layerNorm: eps must be a finite number >= 0/,
    );
    const device = await gpu();
    if (device.features.has("shader-f16")) {
      const half = Tensor.upload(device, new Float32Array(24), [4, 6], "f16");
      expect(() => layerNorm(half)).toThrow("layerNorm: needs f32 input, got f16 (x: [4, 6])");
    }
  });

  it("records nothing under noGrad", async () => {
    const x = await upload(randomValues(12, 5), [3, 4], true);
    const y = noGrad(() => layerNorm(x));
    expect(y.node).toBeNull();
  });
});
