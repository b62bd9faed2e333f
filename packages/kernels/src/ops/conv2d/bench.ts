/**
 * Convolution benchmarks at shapes the models use: the issue's target case (batch 8, 128 -> 128
 * channels, 64x64, 3x3 pad 1) forward and both gradients, a 320-channel 3x3 convolution of a
 * 64x64-latent UNet at its 32x32 level (batch 2), and DenseNet-121 at 224x224 input: a dense-block-2
 * 1x1 bottleneck (batch 16, 256 -> 128 at 28x28) and the 7x7 stride-2 stem (batch 4, 3 -> 64).
 * Each runs the chosen variant next to the naive kernel (one output per invocation) on the same inputs.
 */

import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import type { Gpu } from "../../runtime/device.ts";
import { type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import {
  type Conv2dGeometry,
  type Conv2dOptions,
  type Conv2dVariant,
  chooseConv2dVariant,
  conv2d,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dCost,
  conv2dGeometry,
  conv2dOutputShape,
} from "./index.ts";

/** Deterministic values in [-1, 1) (xorshift), so runs are comparable. */
function benchValues(count: number, seed: number): Float32Array {
  let state = seed >>> 0 || 1;
  const values = new Float32Array(count);
  for (let index = 0; index < count; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    values[index] = ((state >>> 0) / 4294967296) * 2 - 1;
  }
  return values;
}

type Pass = "forward" | "backwardInput" | "backwardWeight";
const OP_NAMES: Record<Pass, string> = {
  forward: "conv2d",
  backwardInput: "conv2dBackwardInput",
  backwardWeight: "conv2dBackwardWeight",
};

interface Conv2dBenchSpec {
  x: Shape;
  w: Shape;
  options: Omit<Conv2dOptions, "variant">;
  pass: Pass;
  bias?: boolean;
  context: string;
  targetSpeedup?: number;
  /** Compare with this variant instead of the naive kernel. */
  baseline?: Conv2dVariant;
}

function describe(spec: Conv2dBenchSpec, g: Conv2dGeometry): string {
  const window = `${g.kernelHeight}x${g.kernelWidth}/${g.strideH}${g.padH ? ` pad ${g.padH}` : ""}`;
  const baseline = spec.baseline ? ` (vs ${spec.baseline})` : "";
  return `${g.batch}x${g.inChannels}->${g.outChannels} @${g.height}x${g.width} ${window}${spec.bias ? " +bias" : ""} fp32${baseline}`;
}

function conv2dCase(spec: Conv2dBenchSpec): BenchCase {
  const g = conv2dGeometry("conv2d bench", spec.x, spec.w, spec.options);
  return {
    op: OP_NAMES[spec.pass],
    shape: describe(spec, g),
    context: spec.context,
    targetSpeedup: spec.targetSpeedup,
    ...conv2dCost(g),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const x = Tensor.upload(gpu, benchValues(sizeOf(spec.x), 3), spec.x);
      const w = Tensor.upload(gpu, benchValues(sizeOf(spec.w), 5), spec.w);
      const bias = spec.bias ? Tensor.upload(gpu, benchValues(g.outChannels, 7), [g.outChannels]) : null;
      const gradOutput = Tensor.upload(
        gpu,
        benchValues(sizeOf(conv2dOutputShape(g)), 11),
        conv2dOutputShape(g),
      );
      const call = (variant: Conv2dVariant) => () => {
        const options = { ...spec.options, variant };
        const result =
          spec.pass === "forward"
            ? conv2d(x, w, bias, options)
            : spec.pass === "backwardInput"
              ? conv2dBackwardInput(gradOutput, w, spec.x, options)
              : conv2dBackwardWeight(gradOutput, x, spec.w, options);
        result.release();
      };
      return {
        run: call(chooseConv2dVariant(gpu, g)),
        naive: call(spec.baseline ?? "naive"),
        naiveLabel: spec.baseline
          ? `baseline: variant ${spec.baseline}`
          : "naive direct conv: one output per invocation",
        dispose: () => {
          for (const tensor of [x, w, bias, gradOutput]) tensor?.release();
        },
      };
    },
  };
}

const TARGET = { x: [8, 128, 64, 64], w: [128, 128, 3, 3], options: { padding: 1 } } as const;

export const CONV2D_BENCH_CASES: BenchCase[] = [
  conv2dCase({
    ...TARGET,
    pass: "forward",
    bias: true,
    context: "issue target: UNet-style 3x3 at 64x64",
    targetSpeedup: 4,
  }),
  conv2dCase({
    ...TARGET,
    pass: "forward",
    bias: true,
    context: "issue target, the chosen variant next to cpu-texture",
    baseline: "cpu-texture",
  }),
  conv2dCase({ ...TARGET, pass: "backwardInput", context: "issue target, gradient of the input" }),
  conv2dCase({
    ...TARGET,
    pass: "backwardInput",
    context: "issue target, gradient of the input, the chosen variant next to cpu-texture",
    baseline: "cpu-texture",
  }),
  conv2dCase({ ...TARGET, pass: "backwardWeight", context: "issue target, gradient of the weight" }),
  conv2dCase({
    x: [2, 320, 32, 32],
    w: [320, 320, 3, 3],
    options: { padding: 1 },
    pass: "forward",
    bias: true,
    context: "UNet 64x64 latent, 320-channel level at 32x32",
  }),
  conv2dCase({
    x: [16, 256, 28, 28],
    w: [128, 256, 1, 1],
    options: {},
    pass: "forward",
    context: "DenseNet-121 @224, dense block 2 bottleneck 1x1",
  }),
  conv2dCase({
    x: [4, 3, 224, 224],
    w: [64, 3, 7, 7],
    options: { stride: 2, padding: 3 },
    pass: "forward",
    context: "DenseNet-121 @224, stem 7x7/2",
  }),
];
