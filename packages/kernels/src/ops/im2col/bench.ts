/**
 * im2col benchmark: the convolution as im2col + matmul (`conv2dIm2col`, this op's use) next to
 * conv2d's chosen variant on the same inputs, at the DenseNet-121 stem (7x7 stride 2 pad 3, 3 -> 64
 * channels at 224x224, batch 1), so the table shows what the direct kernels save over the unfold.
 */
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import { benchValues } from "../../bench/values.ts";
import type { Gpu } from "../../runtime/device.ts";
import { sizeOf, Tensor } from "../../runtime/tensor.ts";
import { chooseConv2dVariant, conv2d, conv2dCost, conv2dGeometry } from "../conv2d/index.ts";
import { conv2dIm2col } from "./index.ts";

const STEM = { x: [1, 3, 224, 224], w: [64, 3, 7, 7], options: { stride: 2, padding: 3 } } as const;

function stemCase(): BenchCase {
  const g = conv2dGeometry("im2col bench", [...STEM.x], [...STEM.w], STEM.options);
  return {
    op: "conv2dIm2col",
    shape: `${g.batch}x${g.inChannels}->${g.outChannels} @${g.height}x${g.width} 7x7/2 pad 3 fp32`,
    context: "DenseNet-121 stem as im2col + matmul",
    ...conv2dCost(g),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const x = Tensor.upload(gpu, benchValues(sizeOf(STEM.x), 3), [...STEM.x]);
      const w = Tensor.upload(gpu, benchValues(sizeOf(STEM.w), 5), [...STEM.w]);
      const variant = chooseConv2dVariant(gpu, g);
      return {
        run: () => conv2dIm2col(x, w, null, STEM.options).release(),
        naive: () => conv2d(x, w, null, { ...STEM.options, variant }).release(),
        naiveLabel: `baseline: conv2d ${variant} (direct)`,
        dispose: () => {
          x.release();
          w.release();
        },
      };
    },
  };
}

export const IM2COL_BENCH_CASES: BenchCase[] = [stemCase()];
