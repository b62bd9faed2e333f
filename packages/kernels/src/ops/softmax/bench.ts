/**
 * Softmax benchmarks at the shapes attention produces: the self-attention scores of a 32x32-latent
 * UNet block (8 heads x 1024 queries, rows of 1024 keys) and a few very long rows. Each times the
 * chosen variant next to the other one, so the choice in choose.ts is justified in the table.
 */
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import type { Gpu } from "../../runtime/device.ts";
import { sizeOf, Tensor } from "../../runtime/tensor.ts";
import { chooseSoftmaxVariant, SOFTMAX_VARIANTS } from "./choose.ts";
import { softmaxCost } from "./cost.ts";
import { softmax } from "./index.ts";
import { softmaxLayout } from "./layout.ts";

function softmaxCase(shape: number[], context: string): BenchCase {
  const size = sizeOf(shape);
  return {
    op: "softmax",
    shape: `[${shape.join("x")}] last axis fp32`,
    context,
    ...softmaxCost(size),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const values = new Float32Array(size);
      for (let index = 0; index < size; index++) values[index] = ((index * 2654435761) % 1000) / 100 - 5;
      const x = Tensor.upload(gpu, values, shape);
      const chosen = chooseSoftmaxVariant(gpu, softmaxLayout(shape, shape.length - 1));
      const other = SOFTMAX_VARIANTS.find((variant) => variant !== chosen) ?? chosen;
      return {
        run: () => softmax(x, -1, { variant: chosen }).release(),
        naive: () => softmax(x, -1, { variant: other }).release(),
        naiveLabel: `other variant: ${other}`,
        dispose: () => x.release(),
      };
    },
  };
}

export const SOFTMAX_BENCH_CASES: BenchCase[] = [
  softmaxCase([8 * 1024, 1024], "UNet 32x32 self-attention scores (8 heads, 1024 tokens)"),
  softmaxCase([4, 65536], "a few very long rows"),
];
