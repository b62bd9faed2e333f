/**
 * Reduction benchmarks at the shapes training produces: a conv-bias gradient of the 64x64-latent
 * UNet's 320-channel level (sumToShape [2, 320, 64, 64] -> [320, 1, 1]), a full sum of the same
 * 2.6M values, and max over H and W. Reductions are memory-bound, so each is timed next to a plain
 * buffer copy of its input: the floor one read of those bytes costs on this adapter.
 */
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import type { Gpu } from "../../runtime/device.ts";
import { sizeOf, Tensor } from "../../runtime/tensor.ts";
import { copyTensor } from "../common/copy.ts";
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
      return {
        run: () => call(x).release(),
        naive: () => copyTensor(x).release(),
        naiveLabel: "a buffer copy of the input (one read and one write)",
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
