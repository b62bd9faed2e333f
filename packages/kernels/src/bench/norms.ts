/**
 * Normalisation benchmarks at the shapes the models really use: group norm in a 64x64-latent UNet
 * (SD 2.1 at 512x512: the 320-channel level and the 1280-channel 8x8 level, 32 groups) and batch norm
 * in DenseNet-121. Each runs our chosen variant next to the naive kernel (one invocation per
 * statistic doing the whole reduction serially). Extra group-norm cases force each design (fused,
 * chunked, workgroup memory), so the adapter's choice is justified by a measurement in the same table.
 */
import { type BatchNormVariant, batchNorm2d, batchNormCost } from "../ops/batchnorm.ts";
import {
  chooseGroupNormVariant,
  type GroupNormVariant,
  groupNorm,
  groupNormCost,
} from "../ops/groupnorm/index.ts";
import type { Gpu } from "../runtime/device.ts";
import { type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import type { BenchCase, BenchInstance } from "./types.ts";

/** Deterministic values in [-2, 2) (xorshift), so runs are comparable. */
function benchValues(count: number, seed: number, offset = 0): Float32Array {
  let state = seed >>> 0 || 1;
  const values = new Float32Array(count);
  for (let index = 0; index < count; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    values[index] = ((state >>> 0) / 4294967296) * 4 - 2 + offset;
  }
  return values;
}

function formatDims(shape: Shape): string {
  return shape.join("x");
}

const GROUP_NORM_DESIGNS: GroupNormVariant[] = ["cpu-fused", "cpu-chunked", "gpu-workgroup"];

/**
 * `forced`: time this variant instead of the adapter's choice, to show by measurement why the
 * chooser picks what it picks (one forced design repeats the choice: a check on run-to-run noise).
 */
function groupNormCase(shape: Shape, groups: number, context: string, forced?: GroupNormVariant): BenchCase {
  return {
    op: "groupNorm",
    shape: `${formatDims(shape)} g${groups} fp32${forced ? ` (${forced} forced)` : ""}`,
    context,
    ...groupNormCost(shape),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const channels = shape[1];
      const x = Tensor.upload(gpu, benchValues(sizeOf(shape), 7, 0.5), shape);
      const gamma = Tensor.upload(gpu, benchValues(channels, 11, 1), [channels]);
      const beta = Tensor.upload(gpu, benchValues(channels, 13), [channels]);
      const variant = forced ?? chooseGroupNormVariant(gpu, shape, groups);
      const call = (chosen: GroupNormVariant) => () =>
        groupNorm(x, groups, gamma, beta, 1e-5, { variant: chosen }).release();
      return {
        run: call(variant),
        naive: call("naive"),
        naiveLabel: "naive: one invocation per (n, group)",
        dispose: () => {
          for (const tensor of [x, gamma, beta]) tensor.release();
        },
      };
    },
  };
}

/** The chosen variant, then every other design forced, at one shape. */
function groupNormCases(shape: Shape, groups: number, context: string): BenchCase[] {
  return [
    groupNormCase(shape, groups, context),
    ...GROUP_NORM_DESIGNS.map((variant) =>
      groupNormCase(shape, groups, `${context}, ${variant} forced`, variant),
    ),
  ];
}

function batchNormCase(shape: Shape, context: string, forced?: BatchNormVariant): BenchCase {
  return {
    op: "batchNorm2d",
    shape: `${formatDims(shape)} training fp32${forced ? ` (${forced} forced)` : ""}`,
    context,
    ...batchNormCost(shape, true),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const channels = shape[1];
      const x = Tensor.upload(gpu, benchValues(sizeOf(shape), 17, 0.5), shape);
      const gamma = Tensor.upload(gpu, benchValues(channels, 19, 1), [channels]);
      const beta = Tensor.upload(gpu, benchValues(channels, 23), [channels]);
      const runningMean = Tensor.zeros(gpu, [channels]);
      const runningVar = Tensor.upload(gpu, new Float32Array(channels).fill(1), [channels]);
      const call = (variant?: BatchNormVariant) => () =>
        batchNorm2d(x, gamma, beta, runningMean, runningVar, { training: true, variant }).release();
      return {
        run: call(forced),
        naive: call("naive"),
        naiveLabel: "naive: one invocation per channel",
        dispose: () => {
          for (const tensor of [x, gamma, beta, runningMean, runningVar]) tensor.release();
        },
      };
    },
  };
}

export const NORM_BENCH_CASES: BenchCase[] = [
  ...groupNormCases([2, 320, 64, 64], 32, "SD UNet 64x64 latent, 320-channel level"),
  ...groupNormCases([2, 1280, 8, 8], 32, "SD UNet 8x8 level, 1280 channels"),
  batchNormCase([8, 128, 56, 56], "DenseNet-121 dense block 1 bottleneck (4 x growth 32), 224x224, batch 8"),
  batchNormCase([8, 128, 56, 56], "same, cpu-chunked forced", "cpu-chunked"),
];
