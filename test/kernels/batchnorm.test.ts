/**
 * Batch norm (ops/batchnorm/, kernels from ops/norm-core/): every variant's y and the gradients of
 * x, gamma and beta in training and eval, and the running buffers after a step, against the float64
 * reference as check-op.ts tables; the reference against finite differences; bad input; running
 * buffers over several steps; the variant choice on its own; the WGSL `cxr kernels dump` prints
 * being the WGSL that runs.
 */
import { backward, batchNorm2d, concat, type Gpu, noGrad, OpError, type Shape, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import {
  BATCH_NORM_KERNELS,
  BATCH_NORM_VARIANTS,
  type BatchNormParams,
  type BatchNormVariant,
  batchNormOpReference,
  batchNormReference,
  batchNormRunningOpReference,
  chooseBatchNormVariant,
} from "../../packages/kernels/src/ops/batchnorm/index.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { asFloat32, expectClose, gpu, randomValues, type Tolerance, upload } from "./helpers.ts";

/** Running buffers before a call: means ~ N(0, 0.25), variances in [1, ~2.5]. */
function running(channels: number, seed: number) {
  return {
    runningMean: asFloat32(randomValues(channels, seed, 0.5)),
    runningVar: asFloat32(randomValues(channels, seed + 1).map((value) => 1 + 0.5 * Math.abs(value))),
  };
}

const SHAPES: { reason: string; shape: number[] }[] = [
  { reason: "the least training accepts: two values per channel", shape: [1, 1, 1, 2] },
  { reason: "odd spatial", shape: [2, 3, 5, 7] },
  { reason: "spatial 1: one value per (n, channel)", shape: [3, 5, 1, 1] },
  { reason: "3x3 maps, 16 channels", shape: [4, 16, 3, 3] },
  { reason: "1152 values per channel: several chunks", shape: [2, 8, 24, 24] },
];

const xgb = (shape: number[]) => [shape, [shape[1]], [shape[1]]];

function stepCase(reason: string, shape: number[], training: boolean, seed: number): OpCase<BatchNormParams> {
  return {
    reason: `${training ? "training" : "eval"}: ${reason}`,
    params: { shape, training, ...running(shape[1], seed) },
    inputs: xgb(shape),
    spread: 1.5,
  };
}

const cases: OpCase<BatchNormParams>[] = [
  ...SHAPES.map(({ reason, shape }) => stepCase(reason, shape, true, 3 + shape[1])),
  ...SHAPES.map(({ reason, shape }) => stepCase(reason, shape, false, 5 + shape[1])),
  stepCase("one value per channel (training would refuse it)", [1, 3, 1, 1], false, 9),
  {
    ...stepCase("DenseNet-121 dense block 2 resolution, 6272 values per channel", [8, 64, 28, 28], true, 91),
    variants: ["cpu-chunked", "gpu-workgroup"],
  },
  { ...stepCase("small, for finite differences", [2, 3, 2, 3], true, 51), finiteDifferences: true },
  { ...stepCase("small, for finite differences", [2, 3, 2, 3], false, 52), finiteDifferences: true },
];

/** f32 rounding: per-channel statistics and gradient sums over `count` = N * H * W values. */
function tolerance({ params: { shape } }: OpCase<BatchNormParams>, variant: BatchNormVariant) {
  const count = shape[0] * shape[2] * shape[3];
  const serial = variant === "naive" ? 4 : 1;
  const elementwise: Tolerance = { atol: serial * (5e-8 * Math.sqrt(count) + 1e-6), rtol: 1e-5 };
  const parameters: Tolerance = { atol: 1e-7 * count + 2e-6, rtol: 1e-5 };
  return { forward: elementwise, backward: elementwise, gradients: [elementwise, parameters, parameters] };
}

/** Runs batch norm with fresh running buffers from `params` (released after the call is recorded). */
function runStep(
  device: Gpu,
  [x, gamma, beta]: readonly Tensor[],
  params: BatchNormParams,
  variant: BatchNormVariant,
): { y: Tensor; runningMean: Tensor; runningVar: Tensor } {
  const channels = params.shape[1];
  const runningMean = Tensor.upload(device, Float32Array.from(params.runningMean), [channels]);
  const runningVar = Tensor.upload(device, Float32Array.from(params.runningVar), [channels]);
  const y = batchNorm2d(x, gamma, beta, runningMean, runningVar, { ...params, variant });
  return { y, runningMean, runningVar };
}

const x3 = (device: Gpu, shape: Shape = [2, 3, 4, 4]) =>
  Tensor.upload(
    device,
    randomValues(
      shape.reduce((a, b) => a * b, 1),
      1,
    ),
    shape,
  );
const vector = (device: Gpu, length: number) => Tensor.upload(device, randomValues(length, length), [length]);

const badInputs: BadInputCase[] = [
  {
    reason: "x that is not NCHW",
    run: (device) =>
      batchNorm2d(
        x3(device, [2, 3]),
        vector(device, 3),
        vector(device, 3),
        vector(device, 3),
        vector(device, 3),
        {
          training: true,
        },
      ),
    throws: "batchNorm2d: needs x of shape [N, C, H, W] (x: [2, 3])",
  },
  {
    reason: "gamma of the wrong length",
    run: (device) =>
      batchNorm2d(x3(device), vector(device, 4), vector(device, 3), vector(device, 3), vector(device, 3), {
        training: true,
      }),
    throws: "batchNorm2d: gamma must have shape [3] (one value per channel) (x: [2, 3, 4, 4], gamma: [4])",
  },
  {
    reason: "runningVar of the wrong length",
    run: (device) =>
      batchNorm2d(x3(device), vector(device, 3), vector(device, 3), vector(device, 3), vector(device, 4), {
        training: true,
      }),
    throws: /^batchNorm2d: runningVar must have shape \[3\]/,
  },
  {
    reason: "a momentum outside [0, 1]",
    run: (device) =>
      batchNorm2d(x3(device), vector(device, 3), vector(device, 3), vector(device, 3), vector(device, 3), {
        training: true,
        momentum: 1.5,
      }),
    throws: "batchNorm2d: momentum must lie in [0, 1], got 1.5 (x: [2, 3, 4, 4])",
  },
  {
    reason: "the same tensor as both running buffers",
    run: (device) => {
      const shared = vector(device, 3);
      return batchNorm2d(x3(device), vector(device, 3), vector(device, 3), shared, shared, {
        training: true,
      });
    },
    throws: /^batchNorm2d: runningMean and runningVar must be different tensors/,
  },
  {
    reason: "one value per channel in training",
    run: (device) =>
      batchNorm2d(
        x3(device, [1, 3, 1, 1]),
        vector(device, 3),
        vector(device, 3),
        vector(device, 3),
        vector(device, 3),
        {
          training: true,
        },
      ),
    throws: "batchNorm2d: training needs more than one value per channel (N * H * W >= 2) (x: [1, 3, 1, 1])",
  },
  {
    reason: "eps that is not finite",
    run: (device) =>
      batchNorm2d(x3(device), vector(device, 3), vector(device, 3), vector(device, 3), vector(device, 3), {
        training: false,
        eps: Number.POSITIVE_INFINITY,
      }),
    throws: /^batchNorm2d: eps must be a finite number >= 0, got Infinity/,
  },
];

checkOp(
  {
    name: "batchNorm2d",
    variants: BATCH_NORM_VARIANTS,
    reference: batchNormOpReference,
    run: (inputs, params, variant, device) => {
      const { y, runningMean, runningVar } = runStep(device, inputs, params, variant);
      runningMean.release();
      runningVar.release();
      return y;
    },
    tolerance,
    // dx is rstd times O(1) terms that cancel, so its rounding scales with the channel's rstd (large
    // for a channel of nearly equal values): compare dx / rstd.
    gradientScale: (index, [x, gamma, beta], params) => {
      if (index !== 0) return null;
      const state = { runningMean: params.runningMean.slice(), runningVar: params.runningVar.slice() };
      const { rstd } = batchNormReference.forward(x, params.shape, gamma, beta, state, params);
      const spatial = params.shape[2] * params.shape[3];
      return Float64Array.from(x, (_, at) => rstd[Math.floor(at / spatial) % params.shape[1]]);
    },
  },
  cases,
  badInputs,
);

// The running buffers after one call: updated in training (unbiased variance), untouched in eval.
checkOp(
  {
    name: "batchNorm2d running buffers",
    variants: BATCH_NORM_VARIANTS,
    reference: batchNormRunningOpReference,
    run: (xs, params, variant, device) => {
      const channels = params.shape[1];
      const ones = Tensor.upload(device, new Float32Array(channels).fill(1), [channels]);
      const zeros = Tensor.zeros(device, [channels]);
      const runningMean = Tensor.upload(device, Float32Array.from(params.runningMean), [channels]);
      const runningVar = Tensor.upload(device, Float32Array.from(params.runningVar), [channels]);
      for (const x of xs)
        batchNorm2d(x, ones, zeros, runningMean, runningVar, { ...params, variant }).release();
      const result = concat([runningMean, runningVar], 0);
      for (const tensor of [ones, zeros, runningMean, runningVar]) tensor.release();
      return result;
    },
    tolerance: () => ({ forward: { atol: 1e-6, rtol: 1e-5 }, backward: { atol: 0, rtol: 0 } }),
    differentiable: [false],
  },
  [
    ...cases
      .filter((testCase) => !testCase.finiteDifferences)
      .map((testCase) => ({ ...testCase, inputs: [testCase.inputs[0]], forwardOnly: true })),
    {
      reason: "training, momentum 0.3: three batches, each with its own mean and spread",
      params: { shape: [3, 4, 5, 6], training: true, momentum: 0.3, ...running(4, 61) },
      inputs: [
        [3, 4, 5, 6],
        [3, 4, 5, 6],
        [3, 4, 5, 6],
      ],
      values: [0, 1, 2].map((step) =>
        Array.from(randomValues(360, 70 + step, 1 + step), (value) => value + 2 * step - 1),
      ),
      forwardOnly: true,
    },
  ],
);

describe("batchNorm2d: the rest", () => {
  it.each(BATCH_NORM_VARIANTS)(
    "%s: three training steps move the running buffers, then eval uses them",
    async (variant) => {
      const shape = [3, 4, 5, 6];
      const channels = 4;
      const device = await gpu();
      const gammaValues = asFloat32(randomValues(channels, 60).map((value) => 1 + 0.3 * value));
      const betaValues = asFloat32(randomValues(channels, 61));
      const start = running(channels, 62);
      const state = { runningMean: start.runningMean.slice(), runningVar: start.runningVar.slice() };
      const gamma = await upload(gammaValues, [channels]);
      const beta = await upload(betaValues, [channels]);
      const runningMean = await upload(start.runningMean, [channels]);
      const runningVar = await upload(start.runningVar, [channels]);
      const momentum = 0.3;
      for (let step = 0; step < 3; step++) {
        const x = asFloat32(randomValues(360, 70 + step, 1 + step).map((value) => value + 2 * step - 1));
        const y = batchNorm2d(await upload(x, shape), gamma, beta, runningMean, runningVar, {
          training: true,
          momentum,
          variant,
        });
        const expected = batchNormReference.forward(x, shape, gammaValues, betaValues, state, {
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
      const evalOutput = batchNorm2d(
        Tensor.upload(device, Float32Array.from(x), shape),
        gamma,
        beta,
        runningMean,
        runningVar,
        {
          training: false,
          variant,
        },
      );
      const expected = batchNormReference.forward(x, shape, gammaValues, betaValues, state, {
        training: false,
      });
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
    },
  );

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

  it("f16 input is refused where the adapter has shader-f16", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return;
    const half = Tensor.upload(device, new Float32Array(96), [2, 3, 4, 4], "f16");
    const call = () =>
      batchNorm2d(half, vector(device, 3), vector(device, 3), vector(device, 3), vector(device, 3), {
        training: true,
      });
    expect(call).toThrow(OpError);
    expect(call).toThrow("batchNorm2d: needs f32 input, got f16 (x: [2, 3, 4, 4])");
  });

  it("chooses per adapter kind: fused with 32+ channels on lavapipe, split otherwise (no GPU needed)", () => {
    expect(chooseBatchNormVariant({ kind: "cpu" }, [16, 64, 112, 112])).toBe("cpu-fused");
    expect(chooseBatchNormVariant({ kind: "cpu" }, [64, 3, 32, 32])).toBe("cpu-chunked");
    expect(chooseBatchNormVariant({ kind: "cpu" }, [1, 32, 1, 2])).toBe("cpu-fused");
    expect(chooseBatchNormVariant({ kind: "cpu" }, [1, 31, 1, 2])).toBe("cpu-chunked");
    expect(chooseBatchNormVariant({ kind: "discrete" }, [16, 64, 112, 112])).toBe("gpu-workgroup");
    expect(chooseBatchNormVariant({ kind: "integrated" }, [64, 3, 32, 32])).toBe("gpu-workgroup");
  });

  it("the device's own choice follows its kind", async () => {
    const device = await gpu();
    expect(chooseBatchNormVariant(device, [16, 64, 112, 112])).toBe(
      device.kind === "cpu" ? "cpu-fused" : "gpu-workgroup",
    );
  });

  it.each(BATCH_NORM_VARIANTS)(
    "%s: the WGSL that `cxr kernels dump` prints is what runs",
    async (variant) => {
      const device = await gpu();
      const passes = BATCH_NORM_KERNELS[variant];
      const dumped = dumpKernelSources({ op: "batchNorm2d", variant });
      for (const [pass, code] of Object.entries(passes)) {
        expect(dumped).toContain(`// batchNorm2d / ${variant} / ${pass}${code}\n`);
      }
      const compiled: string[] = [];
      const pipeline = device.pipeline.bind(device);
      const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
        compiled.push(code);
        return pipeline(code, label, entryPoint);
      };
      device.pipeline = spy;
      try {
        // Spatial 16 loads vec4, spatial 15 scalars; training then eval: between them every pass runs.
        for (const [shape, lanes] of [
          [[2, 3, 4, 4], "vec4"],
          [[2, 3, 5, 3], "scalar"],
        ] as const) {
          compiled.length = 0;
          for (const training of [true, false]) {
            const size = shape.reduce((a, b) => a * b, 1);
            const params: BatchNormParams = { shape: [...shape], training, ...running(3, 7) };
            const x = await upload(randomValues(size, 3), [...shape], true);
            const gamma = await upload(randomValues(3, 4), [3], true);
            const beta = await upload(randomValues(3, 5), [3], true);
            const { y, runningMean, runningVar } = runStep(device, [x, gamma, beta], params, variant);
            backward(y, await upload(randomValues(size, 6), [...shape]));
            await x.grad!.download();
            for (const tensor of [x, gamma, beta, y, runningMean, runningVar]) tensor.release();
          }
          const other = lanes === "vec4" ? "-scalar" : "-vec4";
          const expected = Object.entries(passes)
            .filter(([pass]) => !pass.endsWith(other))
            .map(([, code]) => code);
          expect(new Set(compiled)).toEqual(new Set(expected));
        }
      } finally {
        delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
      }
    },
  );
});
