/**
 * Reduction benchmarks at the shapes training produces: a conv-bias gradient of the 64x64-latent
 * UNet's 320-channel level (sumToShape [2, 320, 64, 64] -> [320, 1, 1]), a full sum of the same
 * 2.6M values, and max over H and W. Reductions are memory-bound, so each is timed next to one
 * tuned read pass over the same values: the norm core's statistics kernel (per (n, channel) mean and
 * variance), which is what one streaming read of those bytes costs on this adapter.
 */
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import type { Gpu } from "../../runtime/device.ts";
import { sizeOf, Tensor } from "../../runtime/tensor.ts";
import { chooseMomentsVariant, momentStatistics } from "../norm-core/index.ts";
import { reduceCost } from "./cost.ts";
import { max, sum, sumToShape } from "./index.ts";

const SHAPE = [2, 320, 64, 64];

function reduceCase(
  label: string,
  context: string,
  outputSize: number,
  call: (x: Tensor) => Tensor,
): BenchCase {
  return {
    op: "reduce",
    shape: `${label} [${SHAPE.join("x")}] fp32`,
    context,
    ...reduceCost(SHAPE, outputSize),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const values = new Float32Array(sizeOf(SHAPE));
      for (let index = 0; index < values.length; index++)
        values[index] = ((index * 2654435761) % 1000) / 500 - 1;
      const x = Tensor.upload(gpu, values, SHAPE);
      const moments = chooseMomentsVariant(gpu);
      const statistics = { statistics: SHAPE[0] * SHAPE[1], outer: 1, outerStride: 0 };
      return {
        run: () => call(x).release(),
        naive: () =>
          momentStatistics(
            "bench",
            x,
            SHAPE[0] * SHAPE[1],
            SHAPE[2] * SHAPE[3],
            statistics,
            1e-5,
            moments,
          ).release(),
        naiveLabel: `one read pass: norm statistics (${moments})`,
        dispose: () => x.release(),
      };
    },
  };
}

export const REDUCE_BENCH_CASES: BenchCase[] = [
  reduceCase("sumToShape -> [320, 1, 1]", "conv-bias gradient, SD UNet 320-channel level", 320, (x) =>
    sumToShape(x, [320, 1, 1]),
  ),
  reduceCase("sum of all", "a loss-like full reduction", 1, (x) => sum(x)),
  reduceCase("max over H, W", "per-channel maxima", 640, (x) => max(x, [2, 3])),
];
