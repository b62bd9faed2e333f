/**
 * Matmul benchmarks at the shapes the models really use: the 1024^3 target case, the attention
 * projections and feed-forward of a 64x64-latent UNet (4096 tokens, 320 channels, Linear weights
 * [out, in] read with transposeB), and the DenseNet-121 classifier head (batch 16, 1024 features, 14
 * labels). Each runs the chosen variant next to the naive kernel (one output per invocation). The
 * "other variant" case forces the GPU-style tiled kernel, so the CPU choice is justified in the table.
 */

import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import { benchValues } from "../../bench/values.ts";
import type { Gpu } from "../../runtime/device.ts";
import { type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import type { WaitMode } from "../../runtime/wait.ts";
import {
  chooseMatmulVariant,
  type MatmulActivation,
  type MatmulVariant,
  matmul,
  matmulCost,
  resolveMatmulShapes,
} from "./index.ts";

interface MatmulBenchSpec {
  a: Shape;
  b: Shape;
  transposeB?: boolean;
  bias?: boolean;
  activation?: MatmulActivation;
  context: string;
  targetSpeedup?: number;
  /** Time this variant instead of the chosen one. */
  variant?: MatmulVariant;
  /** Compare with this variant instead of the naive kernel. */
  baseline?: MatmulVariant;
  /** Compare the chosen variant with itself under two GPU waits instead of with the naive kernel. */
  waits?: { run: WaitMode; naive: WaitMode };
}

function describe(spec: MatmulBenchSpec): string {
  const plan = resolveMatmulShapes(spec.a, spec.b, spec);
  const epilogue = [
    spec.bias ? "+bias" : "",
    spec.activation && spec.activation !== "none" ? `+${spec.activation}` : "",
  ];
  const waits = spec.waits ? ` (${spec.waits.run} wait vs ${spec.waits.naive} wait)` : "";
  const baseline = spec.baseline ? ` (vs ${spec.baseline})` : "";
  return `[${spec.a.join("x")}]x[${spec.b.join("x")}]${spec.transposeB ? "^T" : ""} M${plan.M} N${plan.N} K${plan.K}${epilogue.join("")} fp32${spec.variant ? ` (${spec.variant})` : ""}${waits}${baseline}`;
}

function matmulCase(spec: MatmulBenchSpec): BenchCase {
  const plan = resolveMatmulShapes(spec.a, spec.b, spec);
  return {
    op: "matmul",
    shape: describe(spec),
    context: spec.context,
    targetSpeedup: spec.targetSpeedup,
    ...matmulCost(plan, { bias: spec.bias, activation: spec.activation }),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const a = Tensor.upload(gpu, benchValues(sizeOf(spec.a), 3), spec.a);
      const b = Tensor.upload(gpu, benchValues(sizeOf(spec.b), 5), spec.b);
      const bias = spec.bias ? Tensor.upload(gpu, benchValues(plan.N, 7), [plan.N]) : null;
      const call = (variant: MatmulVariant) => () =>
        matmul(a, b, { transposeB: spec.transposeB, bias, activation: spec.activation, variant }).release();
      const chosen = call(spec.variant ?? chooseMatmulVariant(gpu, plan));
      if (spec.waits) {
        return {
          run: chosen,
          naive: chosen,
          waits: spec.waits,
          naiveLabel: `baseline: the same kernel, ${spec.waits.naive} wait`,
          dispose: () => {
            for (const tensor of [a, b, bias]) tensor?.release();
          },
        };
      }
      if (spec.baseline) {
        return {
          run: chosen,
          naive: call(spec.baseline),
          naiveLabel: `baseline: variant ${spec.baseline}`,
          dispose: () => {
            for (const tensor of [a, b, bias]) tensor?.release();
          },
        };
      }
      return {
        run: chosen,
        naive: call("naive"),
        naiveLabel: "naive: one output per invocation",
        dispose: () => {
          for (const tensor of [a, b, bias]) tensor?.release();
        },
      };
    },
  };
}

export const MATMUL_BENCH_CASES: BenchCase[] = [
  matmulCase({ a: [1024, 1024], b: [1024, 1024], context: "square target case", targetSpeedup: 5 }),
  matmulCase({
    a: [1024, 1024],
    b: [1024, 1024],
    context: "square, the chosen variant next to cpu-register-blocked (issue 8 target: 1.6x)",
    baseline: "cpu-register-blocked",
    targetSpeedup: 1.6,
  }),
  matmulCase({
    a: [1024, 1024],
    b: [1024, 1024],
    context: "square; waiting for the GPU on a timer vs Dawn's setImmediate busy-poll (runtime/wait.ts)",
    waits: { run: "timer", naive: "busy" },
  }),
  matmulCase({
    a: [1024, 1024],
    b: [1024, 1024],
    context: "square, GPU-style tiles forced",
    variant: "gpu-tiled",
  }),
  matmulCase({
    a: [4096, 320],
    b: [320, 320],
    transposeB: true,
    context: "UNet 64x64 attention q/k/v/out projection (Linear 320->320)",
  }),
  matmulCase({
    a: [4096, 320],
    b: [1280, 320],
    transposeB: true,
    bias: true,
    activation: "gelu",
    context: "UNet 64x64 feed-forward up-projection (Linear 320->1280, fused bias+GELU)",
  }),
  matmulCase({
    a: [16, 1024],
    b: [14, 1024],
    transposeB: true,
    bias: true,
    context: "DenseNet-121 classifier head (Linear 1024->14, batch 16)",
  }),
];
