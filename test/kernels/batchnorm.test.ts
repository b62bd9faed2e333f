import {
  type BatchNormVariant,
  backward,
  batchNorm2d,
  batchNormReference,
  chooseBatchNormVariant,
  noGrad,
  OpError,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

const VARIANTS: BatchNormVariant[] = ["cpu-chunked", "gpu-workgroup", "cpu-fused", "naive"];

const SHAPES = [
  [1, 1, 1, 2], // the least training accepts: two values per channel
  [2, 3, 5, 7], // odd spatial
  [3, 5, 1, 1], // spatial 1: one value per (n, channel)
  [4, 16, 3, 3],
  [2, 8, 24, 24], // 1152 values per channel, several chunks
];
const LARGE = [8, 64, 28, 28]; // DenseNet-121 dense block 2 resolution, 6272 values per channel

/** f32 rounding: per-channel statistics and gradient sums over `count` = N * H * W values. */
function tolerance(count: number, variant: BatchNormVariant) {
  const serial = variant === "naive" ? 4 : 1;
  const elementwise = { atol: serial * (5e-8 * Math.sqrt(count) + 1e-6), rtol: 1e-5 };
  return { elementwise, parameters: { atol: 1e-7 * count + 2e-6, rtol: 1e-5 } };
}

interface Parameters {
  gamma: Float64Array;
  beta: Float64Array;
  runningMean: Float64Array;
  runningVar: Float64Array;
}

function parameters(channels: number, seed: number): Parameters {
  return {
    gamma: asFloat32(randomValues(channels, seed).map((value) => 1 + 0.3 * value)),
    beta: asFloat32(randomValues(channels, seed + 1)),
    runningMean: asFloat32(randomValues(channels, seed + 2, 0.5)),
    runningVar: asFloat32(randomValues(channels, seed + 3).map((value) => 1 + 0.5 * Math.abs(value))),
  };
}

async function checkStep(shape: number[], variant: BatchNormVariant, training: boolean, seed: number) {
  const size = shape.reduce((a, b) => a * b, 1);
  const channels = shape[1];
  const count = size / channels;
  const x = asFloat32(randomValues(size, seed, 1.5).map((value) => value - 0.7));
  const gradOutput = asFloat32(randomValues(size, seed + 5));
  const p = parameters(channels, seed + 10);
  const xTensor = await upload(x, shape, true);
  const gamma = await upload(p.gamma, [channels], true);
  const beta = await upload(p.beta, [channels], true);
  const runningMean = await upload(p.runningMean, [channels]);
  const runningVar = await upload(p.runningVar, [channels]);
  const y = batchNorm2d(xTensor, gamma, beta, runningMean, runningVar, { training, variant });
  const state = { runningMean: p.runningMean.slice(), runningVar: p.runningVar.slice() };
  const expected = batchNormReference.forward(x, shape, p.gamma, p.beta, state, { training });
  const tol = tolerance(count, variant);
  const label = `batchNorm2d ${variant} ${training ? "training" : "eval"} [${shape}]`;
  expectClose(await y.download(), expected.y, tol.elementwise, `${label} forward`);
  const runningTolerance = { atol: 1e-6, rtol: 1e-5 };
  expectClose(await runningMean.download(), state.runningMean, runningTolerance, `${label} running mean`);
  expectClose(await runningVar.download(), state.runningVar, runningTolerance, `${label} running var`);
  backward(y, await upload(gradOutput, shape));
  const grads = batchNormReference.backward(x, shape, p.gamma, gradOutput, expected, training);
  expectClose(await xTensor.grad!.download(), grads.gradInput, tol.elementwise, `${label} dx`);
  expectClose(await gamma.grad!.download(), grads.gradGamma, tol.parameters, `${label} dgamma`);
  expectClose(await beta.grad!.download(), grads.gradBeta, tol.parameters, `${label} dbeta`);
  for (const tensor of [xTensor, gamma, beta, runningMean, runningVar, y]) tensor.release();
}

describe.each(VARIANTS)("batchNorm2d %s", (variant) => {
  it.each(SHAPES)(
    "training: forward, running stats and backward match the reference, [%i, %i, %i, %i]",
    async (...shape) => {
      await checkStep(shape, variant, true, 3 + shape[1]);
    },
  );

  it.each(SHAPES)(
    "eval: forward and backward (an affine map) match the reference, [%i, %i, %i, %i]",
    async (...shape) => {
      await checkStep(shape, variant, false, 5 + shape[1]);
    },
  );

  it("updates the running buffers in place over 3 training steps, then eval uses them", async () => {
    const shape = [3, 4, 5, 6];
    const channels = 4;
    const p = parameters(channels, 61);
    const gamma = await upload(p.gamma, [channels]);
    const beta = await upload(p.beta, [channels]);
    const runningMean = await upload(p.runningMean, [channels]);
    const runningVar = await upload(p.runningVar, [channels]);
    const state = { runningMean: p.runningMean.slice(), runningVar: p.runningVar.slice() };
    const momentum = 0.3;
    for (let step = 0; step < 3; step++) {
      // Each batch has its own mean and spread, so the running averages really move.
      const x = asFloat32(randomValues(360, 70 + step, 1 + step).map((value) => value + 2 * step - 1));
      const y = batchNorm2d(await upload(x, shape), gamma, beta, runningMean, runningVar, {
        training: true,
        momentum,
        variant,
      });
      const expected = batchNormReference.forward(x, shape, p.gamma, p.beta, state, {
        training: true,
        momentum,
      });
      expectClose(await y.download(), expected.y, { atol: 2e-6, rtol: 1e-5 }, `step ${step} forward`);
      expectClose(
        await runningMean.download(),
        state.runningMean,
        { atol: 1e-6, rtol: 1e-5 },
        `step ${step} mean`,
      );
      expectClose(
        await runningVar.download(),
        state.runningVar,
        { atol: 1e-6, rtol: 1e-5 },
        `step ${step} var`,
      );
    }
    const x = asFloat32(randomValues(360, 80, 2));
    const before = await runningVar.download();
    const evalOutput = batchNorm2d(await upload(x, shape), gamma, beta, runningMean, runningVar, {
      training: false,
      variant,
    });
    const expected = batchNormReference.forward(x, shape, p.gamma, p.beta, state, { training: false });
    expectClose(await evalOutput.download(), expected.y, { atol: 2e-6, rtol: 1e-5 }, "eval after training");
    expect(Array.from(await runningVar.download())).toEqual(Array.from(before)); // eval leaves them alone
    const trainingOutput = batchNorm2d(await upload(x, shape), gamma, beta, runningMean, runningVar, {
      training: true,
      momentum: 0,
      variant,
    });
    // Same input, batch statistics instead of running ones: a different normalisation.
    const difference = (await trainingOutput.download()).reduce(
      (worst, value, index) => Math.max(worst, Math.abs(value - expected.y[index])),
      0,
    );
    expect(difference).toBeGreaterThan(0.1);
  });
});

describe("batchNorm2d at DenseNet scale", () => {
  it.each(["cpu-chunked", "gpu-workgroup"] as BatchNormVariant[])(
    "%s: [8, 64, 28, 28] training",
    async (variant) => {
      await checkStep(LARGE, variant, true, 91);
    },
  );

  it("chooses per adapter", async () => {
    const device = await gpu();
    if (device.kind === "cpu") {
      expect(chooseBatchNormVariant(device, [16, 64, 112, 112])).toBe("cpu-fused");
      expect(chooseBatchNormVariant(device, [64, 3, 32, 32])).toBe("cpu-chunked"); // few channels: split them
    } else {
      expect(chooseBatchNormVariant(device, [16, 64, 112, 112])).toBe("gpu-workgroup");
    }
  });
});

describe("batchNorm2d reference", () => {
  const shape = [2, 3, 2, 3];
  const x = randomValues(36, 51, 1.5);
  const gamma = randomValues(3, 52).map((value) => 1 + 0.4 * value);
  const beta = randomValues(3, 53);
  const gradOutput = randomValues(36, 54);
  const fd = { atol: 1e-6, rtol: 1e-5 };

  it.each([true, false])("backward agrees with finite differences (training %s)", (training) => {
    const running = () => ({
      runningMean: Float64Array.of(0.1, -0.2, 0.3),
      runningVar: Float64Array.of(1, 2, 0.5),
    });
    const forward = ([xs, gammas, betas]: Float64Array[]) =>
      batchNormReference.forward(xs, shape, gammas, betas, running(), { training }).y;
    const statistics = batchNormReference.forward(x, shape, gamma, beta, running(), { training });
    const analytic = batchNormReference.backward(x, shape, gamma, gradOutput, statistics, training);
    const inputs = [x, gamma, beta];
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

describe("batchNorm2d bad input", () => {
  it("names the op and the shapes", async () => {
    const x = await upload(randomValues(2 * 3 * 4 * 4, 1), [2, 3, 4, 4]);
    const vector = async (length: number) => upload(randomValues(length, length), [length]);
    const [gamma, beta, mean, variance] = [
      await vector(3),
      await vector(3),
      await vector(3),
      await vector(3),
    ];
    const training = { training: true };
    const flat = await upload(randomValues(6, 3), [2, 3]);
    expect(() => batchNorm2d(flat, gamma, beta, mean, variance, training)).toThrow(OpError);
    expect(() => batchNorm2d(flat, gamma, beta, mean, variance, training)).toThrow(
      "batchNorm2d: needs x of shape [N, C, H, W] (x: [2, 3])",
    );
    const wrong = await vector(4);
    expect(() => batchNorm2d(x, wrong, beta, mean, variance, training)).toThrow(
      "batchNorm2d: gamma must have shape [3] (one value per channel) (x: [2, 3, 4, 4], gamma: [4])",
    );
    expect(() => batchNorm2d(x, gamma, beta, mean, wrong, training)).toThrow(
      /^batchNorm2d: runningVar must have shape \[3\]/,
    );
    expect(() => batchNorm2d(x, gamma, beta, mean, variance, { training: true, momentum: 1.5 })).toThrow(
      "batchNorm2d: momentum must lie in [0, 1], got 1.5 (x: [2, 3, 4, 4])",
    );
    expect(() => batchNorm2d(x, gamma, beta, mean, mean, training)).toThrow(
      /^batchNorm2d: runningMean and runningVar must be different tensors/,
    );
    const single = await upload(randomValues(3, 9), [1, 3, 1, 1]);
    expect(() => batchNorm2d(single, gamma, beta, mean, variance, training)).toThrow(
      "batchNorm2d: training needs more than one value per channel (N * H * W >= 2) (x: [1, 3, 1, 1])",
    );
    // Eval mode has no batch statistics to estimate, so a single value per channel is fine.
    expect(() => batchNorm2d(single, gamma, beta, mean, variance, { training: false })).not.toThrow();
    const device = await gpu();
    if (device.features.has("shader-f16")) {
      const half = Tensor.upload(device, new Float32Array(96), [2, 3, 4, 4], "f16");
      expect(() => batchNorm2d(half, gamma, beta, mean, variance, training)).toThrow(
        "batchNorm2d: needs f32 input, got f16 (x: [2, 3, 4, 4])",
      );
    }
  });

  it("records nothing under noGrad but still updates the running buffers", async () => {
    const x = await upload(
      randomValues(24, 5, 2).map((value) => value + 3),
      [2, 3, 2, 2],
      true,
    );
    const gamma = await upload([1, 1, 1], [3], true);
    const beta = await upload([0, 0, 0], [3], true);
    const mean = await upload([0, 0, 0], [3]);
    const variance = await upload([1, 1, 1], [3]);
    const y = noGrad(() => batchNorm2d(x, gamma, beta, mean, variance, { training: true }));
    expect(y.node).toBeNull();
    expect((await mean.download()).every((value) => value !== 0)).toBe(true);
  });
});
