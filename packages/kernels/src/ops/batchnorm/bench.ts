/**
 * Batch norm benchmark at DenseNet-121's shape: the chosen variant and the chunked one forced, each
 * next to the naive kernel (one invocation per channel doing the whole reduction serially).
 */
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import { benchValues } from "../../bench/values.ts";
import type { Gpu } from "../../runtime/device.ts";
import { type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import type { BatchNormVariant } from "./choose.ts";
import { batchNormCost } from "./cost.ts";
import { batchNorm2d } from "./index.ts";

function batchNormCase(shape: Shape, context: string, forced?: BatchNormVariant): BenchCase {
  return {
    op: "batchNorm2d",
    shape: `${shape.join("x")} training fp32${forced ? ` (${forced} forced)` : ""}`,
    context,
    ...batchNormCost(shape, true),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const channels = shape[1];
      const x = Tensor.upload(gpu, benchValues(sizeOf(shape), 17, 2, 0.5), shape);
      const gamma = Tensor.upload(gpu, benchValues(channels, 19, 2, 1), [channels]);
      const beta = Tensor.upload(gpu, benchValues(channels, 23, 2), [channels]);
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

export const BATCH_NORM_BENCH_CASES: BenchCase[] = [
  batchNormCase([8, 128, 56, 56], "DenseNet-121 dense block 1 bottleneck (4 x growth 32), 224x224, batch 8"),
  batchNormCase([8, 128, 56, 56], "same, cpu-chunked forced", "cpu-chunked"),
];
