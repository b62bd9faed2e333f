import {
  backward,
  chooseGroupNormVariant,
  type GroupNormVariant,
  groupNorm,
  groupNormReference,
  noGrad,
  OpError,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

const VARIANTS: GroupNormVariant[] = ["cpu-chunked", "gpu-workgroup", "cpu-fused", "naive"];

interface Case {
  shape: number[];
  groups: number;
  affine: boolean;
}

const CASES: Case[] = [
  { shape: [1, 1, 7], groups: 1, affine: true }, // C = 1, one group, odd spatial
  { shape: [2, 4], groups: 2, affine: true }, // no spatial axes
  { shape: [2, 6, 5, 3], groups: 3, affine: false }, // odd spatial, no gamma/beta
  { shape: [3, 10, 7], groups: 5, affine: true }, // group of 2 x 7 = 14: a multiple of nothing useful
  { shape: [1, 64, 9, 9], groups: 32, affine: true }, // SD's 32 groups, odd 9x9
  { shape: [2, 32, 24, 24], groups: 4, affine: true }, // 4608-element groups, several chunks each
];
// The 320-channel level of a 64x64-latent UNet: 40960 elements per group.
const LARGE: Case = { shape: [1, 320, 64, 64], groups: 32, affine: true };

/**
 * Tolerances from f32 rounding: statistics over a group of `span` elements err ~ sqrt(span) ulps
 * (blocked sums), gamma/beta gradients sum `count` = N x spatial terms per channel. The naive
 * baseline sums whole groups serially, so it gets 4x the forward and dx bounds.
 */
function tolerance(span: number, count: number, variant: GroupNormVariant) {
  const serial = variant === "naive" ? 4 : 1;
  const elementwise = { atol: serial * (5e-8 * Math.sqrt(span) + 1e-6), rtol: 1e-5 };
  return { forward: elementwise, input: elementwise, parameters: { atol: 1e-7 * count + 2e-6, rtol: 1e-5 } };
}

async function checkCase({ shape, groups, affine }: Case, variant: GroupNormVariant, seed: number) {
  const size = shape.reduce((a, b) => a * b, 1);
  const channels = shape[1];
  const x = asFloat32(randomValues(size, seed, 2).map((value) => value + 0.5));
  const gamma = affine ? asFloat32(randomValues(channels, seed + 1).map((value) => 1 + 0.3 * value)) : null;
  const beta = affine ? asFloat32(randomValues(channels, seed + 2)) : null;
  const gradOutput = asFloat32(randomValues(size, seed + 3));
  const xTensor = await upload(x, shape, true);
  const gammaTensor = gamma ? await upload(gamma, [channels], true) : null;
  const betaTensor = beta ? await upload(beta, [channels], true) : null;
  const y = groupNorm(xTensor, groups, gammaTensor, betaTensor, 1e-5, { variant });
  const span = size / (shape[0] * groups);
  const tol = tolerance(span, size / channels, variant);
  const label = `groupNorm ${variant} [${shape}] g${groups}`;
  expectClose(
    await y.download(),
    groupNormReference.forward(x, shape, groups, gamma, beta, 1e-5).y,
    tol.forward,
    `${label} forward`,
  );
  backward(y, await upload(gradOutput, shape));
  const expected = groupNormReference.backward(x, shape, groups, gamma, gradOutput, 1e-5);
  expectClose(await xTensor.grad!.download(), expected.gradInput, tol.input, `${label} dx`);
  if (gammaTensor) {
    expectClose(await gammaTensor.grad!.download(), expected.gradGamma, tol.parameters, `${label} dgamma`);
    expectClose(await betaTensor!.grad!.download(), expected.gradBeta, tol.parameters, `${label} dbeta`);
  }
  for (const tensor of [xTensor, gammaTensor, betaTensor, y]) tensor?.release();
}

describe.each(VARIANTS)("groupNorm %s", (variant) => {
  it.each(CASES)("forward and backward match the float64 reference: %j", async (testCase) => {
    await checkCase(testCase, variant, 7 + testCase.shape.length * 13 + testCase.groups);
  });

  it("stays accurate when the data has a large common offset (no E[x²] - E[x]² cancellation)", async () => {
    const shape = [2, 8, 16, 16];
    const x = asFloat32(randomValues(4096, 31).map((value) => 1000 + value));
    const y = groupNorm(await upload(x, shape), 4, null, null, 1e-5, { variant });
    // The f32 mean near 1000 alone carries up to half an ulp (3e-5), so ~3 ulps is the bound for
    // our variants; E[x²] - E[x]² would be off by ~1e-1 here. The naive baseline sums ~1e6-sized
    // partials serially (ulp 0.06), which moves the mean by ~1e-3: it gets a bound that says so.
    expectClose(
      await y.download(),
      groupNormReference.forward(x, shape, 4, null, null).y,
      { atol: variant === "naive" ? 4e-3 : 2e-4, rtol: 0 },
      `${variant} offset`,
    );
  });

  it("stays accurate when chunks start with far outliers (the exact re-read path)", async () => {
    // 256 groups of 1024 values whose first 16 are 1000: each group is one CPU chunk whose shift K
    // (the mean of its first 16 values) is an outlier, so the shifted sums cancel ~6 bits and only
    // the re-read about the chunk mean keeps M2 to f32 accuracy (this test fails without it).
    const shape = [1, 256, 1024];
    const x = asFloat32(randomValues(262144, 37).map((value, index) => (index % 1024 < 16 ? 1000 : value)));
    const y = groupNorm(await upload(x, shape), 256, null, null, 1e-5, { variant });
    expectClose(
      await y.download(),
      groupNormReference.forward(x, shape, 256, null, null).y,
      { atol: 2e-5, rtol: 3e-6 },
      `${variant} outliers`,
    );
  });
});

describe("groupNorm at UNet scale", () => {
  it.each(["cpu-chunked", "gpu-workgroup"] as GroupNormVariant[])(
    "%s: 1x320x64x64, 32 groups, matches the reference",
    async (variant) => {
      await checkCase(LARGE, variant, 101);
    },
  );

  it("chooses per adapter: fused with enough groups on lavapipe, split groups otherwise", async () => {
    const device = await gpu();
    const unet = chooseGroupNormVariant(device, [2, 320, 64, 64], 32);
    const fewGroups = chooseGroupNormVariant(device, [1, 64, 64, 64], 8);
    if (device.kind === "cpu") {
      expect(unet).toBe("cpu-fused");
      expect(fewGroups).toBe("cpu-chunked");
    } else {
      expect(unet).toBe("gpu-workgroup");
    }
  });
});

describe("groupNorm reference", () => {
  it("backward agrees with finite differences (x, gamma, beta)", () => {
    const shape = [2, 6, 5];
    const groups = 3;
    const x = randomValues(60, 41, 1.5);
    const gamma = randomValues(6, 42).map((value) => 1 + 0.5 * value);
    const beta = randomValues(6, 43);
    const gradOutput = randomValues(60, 44);
    const forward = ([xs, gammas, betas]: Float64Array[]) =>
      groupNormReference.forward(xs, shape, groups, gammas, betas, 1e-5).y;
    const analytic = groupNormReference.backward(x, shape, groups, gamma, gradOutput, 1e-5);
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

describe("groupNorm bad input", () => {
  it("names the op and the shapes", async () => {
    const x = await upload(randomValues(2 * 6 * 4, 1), [2, 6, 4]);
    expect(() => groupNorm(x, 4)).toThrow(OpError);
    expect(() => groupNorm(x, 4)).toThrow(
      "groupNorm: groups must be a positive divisor of the 6 channels, got 4 (x: [2, 6, 4])",
    );
    expect(() => groupNorm(x, 0)).toThrow(/^groupNorm: groups must be a positive divisor/);
    const gamma = await upload(randomValues(5, 2), [5]);
    expect(() => groupNorm(x, 3, gamma)).toThrow(
      "groupNorm: gamma must have shape [6] (one value per channel) (x: [2, 6, 4], gamma: [5])",
    );
    const flat = await upload(randomValues(6, 3), [6]);
    expect(() => groupNorm(flat, 1)).toThrow("groupNorm: needs x of shape [N, C, ...spatial] (x: [6])");
    expect(() => groupNorm(x, 3, null, null, -1)).toThrow(/^groupNorm: eps must be a finite number >= 0/);
    const device = await gpu();
    if (device.features.has("shader-f16")) {
      const half = Tensor.upload(device, new Float32Array(48), [2, 6, 4], "f16");
      expect(() => groupNorm(half, 3)).toThrow("groupNorm: needs f32 input, got f16 (x: [2, 6, 4])");
    }
  });

  it("records nothing under noGrad", async () => {
    const x = await upload(randomValues(24, 5), [2, 4, 3], true);
    const y = noGrad(() => groupNorm(x, 2));
    expect(y.requiresGrad).toBe(false);
    expect(y.node).toBeNull();
  });
});
