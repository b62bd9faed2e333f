/**
 * Layer norm benchmark at the shape the UNet's transformer blocks use: the 32x32 tokens of the
 * 64x64-latent UNet at D = 320 (batch 2). The chosen variant is timed next to the other one, so the
 * choice in choose.ts is justified in the same table.
 */
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import { benchValues } from "../../bench/values.ts";
import type { Gpu } from "../../runtime/device.ts";
import { sizeOf, Tensor } from "../../runtime/tensor.ts";
import { chooseLayerNormVariant, LAYER_NORM_VARIANTS } from "./choose.ts";
import { layerNormCost } from "./cost.ts";
import { layerNorm } from "./index.ts";

function layerNormCase(shape: number[], context: string): BenchCase {
  return {
    op: "layerNorm",
    shape: `${shape.join("x")} last axis fp32`,
    context,
    ...layerNormCost(shape),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const width = shape.at(-1)!;
      const x = Tensor.upload(gpu, benchValues(sizeOf(shape), 29, 2, 0.5), shape);
      const gamma = Tensor.upload(gpu, benchValues(width, 31, 2, 1), [width]);
      const beta = Tensor.upload(gpu, benchValues(width, 37, 2), [width]);
      const chosen = chooseLayerNormVariant(gpu, shape);
      const other = LAYER_NORM_VARIANTS.find((variant) => variant !== chosen) ?? chosen;
      return {
        run: () => layerNorm(x, gamma, beta, 1e-5, { variant: chosen }).release(),
        naive: () => layerNorm(x, gamma, beta, 1e-5, { variant: other }).release(),
        naiveLabel: `other variant: ${other}`,
        dispose: () => {
          for (const tensor of [x, gamma, beta]) tensor.release();
        },
      };
    },
  };
}

export const LAYER_NORM_BENCH_CASES: BenchCase[] = [
  layerNormCase([2, 1024, 320], "SD UNet 32x32 transformer tokens, D = 320"),
];
