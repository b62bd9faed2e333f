/**
 * Convolution benchmarks at shapes the models use: the issue's target case (batch 8, 128 -> 128
 * channels, 64x64, 3x3 pad 1) forward and both gradients, a 320-channel 3x3 convolution of a
 * 64x64-latent UNet at its 32x32 level (batch 2), and DenseNet-121 at 224x224 input: a dense-block-2
 * 1x1 bottleneck (batch 16, 256 -> 128 at 28x28) and the 7x7 stride-2 stem (batch 4, 3 -> 64).
 * Each runs the chosen variant next to the naive kernel (one output per invocation) on the same inputs;
 * the "(vs cpu-texture)" cases (`--filter "(vs cpu"`) run it next to cpu-texture instead, for the target
 * shape's and the 1x1 bottleneck's three passes, and also time the pass's implicit GEMM as a plain
 * matmul of the same FLOPs (notes: its rate and the convolution's fraction of it, "of matmul").
 */

import { timeMedian } from "../../bench/runner.ts";
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import { benchValues } from "../../bench/values.ts";
import type { Gpu } from "../../runtime/device.ts";
import { type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import { matmul } from "../matmul/index.ts";
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
  /** Also time a plain matmul of the pass's implicit GEMM (same FLOPs) and print the chosen rate's fraction of it. */
  matmul?: boolean;
}

/**
 * The pass as a plain product [M, K] x [K, N] with the same FLOPs (P = batch * OH * OW output pixels):
 * forward [O, Cg kH kW] x [Cg kH kW, P], input gradient [Cg, Og kH kW] x [Og kH kW, P] per group,
 * weight gradient [O, P] x [P, Cg kH kW]. `pixelsIn` says which of K and N is P.
 */
function implicitGemm(pass: Pass, g: Conv2dGeometry) {
  const pixels = g.batch * g.outHeight * g.outWidth;
  const taps = g.kernelHeight * g.kernelWidth;
  if (pass === "forward") return { M: g.outChannels, K: g.inPerGroup * taps, N: pixels, pixelsIn: "N" };
  if (pass === "backwardInput") return { M: g.inChannels, K: g.outPerGroup * taps, N: pixels, pixelsIn: "N" };
  return { M: g.outChannels, K: pixels, N: g.inPerGroup * taps, pixelsIn: "K" };
}

/** Largest operand of the matmul comparison: one buffer must hold it on every adapter. */
const MATMUL_OPERAND_LIMIT = 2 ** 24; // floats (64 MiB)

/**
 * Times the pass's implicit GEMM as matmuls (the chosen variant): the pixel dimension is cut into
 * equal parts so every operand fits one buffer, and each timed sample runs all parts (the same FLOPs
 * as the convolution, up to rounding of the last part). Returns its rate and the convolution's fraction.
 */
async function matmulFraction(
  gpu: Gpu,
  pass: Pass,
  g: Conv2dGeometry,
  milliseconds: number,
): Promise<Record<string, string>> {
  const { M, K, N, pixelsIn } = implicitGemm(pass, g);
  const pixels = pixelsIn === "N" ? N : K;
  const other = pixelsIn === "N" ? K : N;
  const parts = Math.ceil((pixels * Math.max(other, M)) / MATMUL_OPERAND_LIMIT);
  const share = Math.ceil(pixels / parts);
  const [k, n] = pixelsIn === "N" ? [K, share] : [share, N];
  const a = Tensor.upload(gpu, benchValues(M * k, 13), [M, k]);
  const b = Tensor.upload(gpu, benchValues(k * n, 17), [k, n]);
  try {
    gpu.profiler.reset();
    const matmulMs = await timeMedian(
      gpu,
      () => {
        for (let part = 0; part < parts; part++) matmul(a, b).release();
      },
      3,
      300,
      undefined,
    );
    const variant = [
      ...new Set(
        gpu.profiler
          .rows()
          .filter((row) => row.name === "matmul")
          .map((row) => row.variant),
      ),
    ];
    const matmulRate = (2 * M * k * n * parts) / matmulMs / 1e6;
    const convRate = conv2dCost(g).flops / milliseconds / 1e6;
    return {
      [`matmul ${parts > 1 ? `${parts} x ` : ""}${M}x${k}x${n} (same FLOPs, ${variant.join("+") || "-"})`]: `${matmulMs.toFixed(2)} ms, ${matmulRate.toFixed(2)} GFLOP/s`,
      "of matmul": `${((100 * convRate) / matmulRate).toFixed(1)}%`,
    };
  } finally {
    a.release();
    b.release();
  }
}

function describe(spec: Conv2dBenchSpec, g: Conv2dGeometry): string {
  const window = `${g.kernelHeight}x${g.kernelWidth}/${g.strideH}${g.padH ? ` pad ${g.padH}` : ""}`;
  const baseline = spec.baseline ? ` (vs ${spec.baseline})` : "";
  const pass =
    spec.pass === "forward" ? "" : spec.pass === "backwardInput" ? " input gradient" : " weight gradient";
  return `${g.batch}x${g.inChannels}->${g.outChannels} @${g.height}x${g.width} ${window}${spec.bias ? " +bias" : ""}${pass} fp32${baseline}`;
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
        ...(spec.matmul
          ? { extra: ({ milliseconds }) => matmulFraction(gpu, spec.pass, g, milliseconds) }
          : {}),
        dispose: () => {
          for (const tensor of [x, w, bias, gradOutput]) tensor?.release();
        },
      };
    },
  };
}

const TARGET = { x: [8, 128, 64, 64], w: [128, 128, 3, 3], options: { padding: 1 } } as const;
/** DenseNet-121 @224, dense block 2: the 1x1 bottleneck (a plain GEMM over channels). */
const DENSE_1X1 = { x: [16, 256, 28, 28], w: [128, 256, 1, 1], options: {} } as const;

/** The chosen variant next to cpu-texture (the pre-subgroup variant), with matmul's rate at the same FLOPs. */
function sideBySide(spec: Omit<Conv2dBenchSpec, "baseline" | "matmul">): BenchCase {
  return conv2dCase({ ...spec, baseline: "cpu-texture", matmul: true });
}

export const CONV2D_BENCH_CASES: BenchCase[] = [
  conv2dCase({
    ...TARGET,
    pass: "forward",
    bias: true,
    context: "issue target: UNet-style 3x3 at 64x64",
    targetSpeedup: 4,
  }),
  sideBySide({
    ...TARGET,
    pass: "forward",
    bias: true,
    context: "issue target, the chosen variant next to cpu-texture",
  }),
  conv2dCase({ ...TARGET, pass: "backwardInput", context: "issue target, gradient of the input" }),
  sideBySide({
    ...TARGET,
    pass: "backwardInput",
    context: "issue target, gradient of the input, the chosen variant next to cpu-texture",
  }),
  conv2dCase({ ...TARGET, pass: "backwardWeight", context: "issue target, gradient of the weight" }),
  sideBySide({
    ...TARGET,
    pass: "backwardWeight",
    context: "issue target, gradient of the weight, the chosen variant next to cpu-texture",
  }),
  conv2dCase({
    x: [2, 320, 32, 32],
    w: [320, 320, 3, 3],
    options: { padding: 1 },
    pass: "forward",
    bias: true,
    context: "UNet 64x64 latent, 320-channel level at 32x32",
  }),
  conv2dCase({ ...DENSE_1X1, pass: "forward", context: "DenseNet-121 @224, dense block 2 bottleneck 1x1" }),
  sideBySide({
    ...DENSE_1X1,
    pass: "forward",
    context: "DenseNet 1x1 bottleneck, the chosen variant next to cpu-texture",
  }),
  sideBySide({
    ...DENSE_1X1,
    pass: "backwardInput",
    context: "DenseNet 1x1 bottleneck, gradient of the input, next to cpu-texture",
  }),
  sideBySide({
    ...DENSE_1X1,
    pass: "backwardWeight",
    context: "DenseNet 1x1 bottleneck, gradient of the weight, next to cpu-texture",
  }),
  conv2dCase({
    x: [4, 3, 224, 224],
    w: [64, 3, 7, 7],
    options: { stride: 2, padding: 3 },
    pass: "forward",
    context: "DenseNet-121 @224, stem 7x7/2",
  }),
];
