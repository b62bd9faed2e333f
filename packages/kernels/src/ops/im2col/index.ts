/**
 * im2col: unfolds convolution windows of x [N, C, H, W] into rows of cols [N, OH*OW, C*kH*kW]
 * (PyTorch's unfold, transposed), so a convolution becomes one matmul. Its backward, col2im, is a
 * gather: each input pixel sums the column entries that read it, so no atomics are needed.
 * Used by `conv2dIm2col` (a matmul-backed convolution and a test oracle for conv2d). Layout like
 * ops/softmax/: `index.ts` (this file), `choose.ts`, `gather.ts` (the variant's WGSL),
 * `reference.ts`, `cost.ts`, `bench.ts`; the window geometry is ops/common/window.ts.
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, Tensor } from "../../runtime/tensor.ts";
import { requireF32 } from "../common/checks.ts";
import { type WindowOptions, window2d } from "../common/window.ts";
import { permute, reshape } from "../layout/index.ts";
import { matmul } from "../matmul/index.ts";
import type { Im2colVariant } from "./choose.ts";
import { col2imCost, im2colCost } from "./cost.ts";
import { COL2IM_WGSL, geometryParams, IM2COL_WGSL } from "./gather.ts";

export type { WindowOptions } from "../common/window.ts";
export { chooseIm2colVariant, IM2COL_VARIANTS, type Im2colVariant } from "./choose.ts";
export { col2imCost, im2colCost } from "./cost.ts";
export { type Im2colParams, im2colOpReference, im2colReference } from "./reference.ts";

/** The variant's kernels, exactly as launched (`cxr kernels dump im2col`). */
export const IM2COL_KERNELS: Readonly<Record<Im2colVariant, Readonly<Record<string, string>>>> = {
  gather: { forward: IM2COL_WGSL, backward: COL2IM_WGSL },
};

/** x [N, C, H, W] -> cols [N, OH*OW, C*kH*kW]. */
export function im2col(x: Tensor, kernel: [number, number], options: WindowOptions = {}): Tensor {
  requireF32("im2col", { input: x }, { x });
  const g = window2d("im2col", x.shape, kernel, options, { x });
  const window = g.channels * g.kernelHeight * g.kernelWidth;
  const cols = Tensor.empty(x.gpu, [g.batch, g.outHeight * g.outWidth, window]);
  launch(
    x.gpu,
    { name: "im2col", code: IM2COL_WGSL },
    {
      bindings: [x, cols],
      params: geometryParams(cols.size, g),
      workgroups: grid(cols.size, 256),
      ...im2colCost(g),
    },
  );
  if (needsGrad(x)) {
    record("im2col", [x], [cols], ([gradCols]) => {
      const gradInput = Tensor.empty(x.gpu, x.shape);
      launch(
        x.gpu,
        { name: "col2im", code: COL2IM_WGSL },
        {
          bindings: [gradCols!, gradInput],
          params: geometryParams(x.size, g),
          workgroups: grid(x.size, 256),
          ...col2imCost(g),
        },
      );
      return [gradInput];
    });
  }
  return cols;
}

/**
 * Convolution as im2col + matmul (groups = 1): y [N, O, OH, OW] from x [N, C, H, W] and
 * weight [O, C, kH, kW]. Gradients flow through im2col's col2im and matmul's backward.
 */
export function conv2dIm2col(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  options: WindowOptions = {},
): Tensor {
  if (weight.rank !== 4) throw new OpError("conv2dIm2col", "weight must be [O, C, kH, kW]", { x, weight });
  const [outChannels, inChannels, kH, kW] = weight.shape;
  if (x.rank !== 4 || x.shape[1] !== inChannels) {
    throw new OpError("conv2dIm2col", `x must be [N, ${inChannels}, H, W] to match the weight`, {
      x,
      weight,
    });
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outChannels)) {
    throw new OpError("conv2dIm2col", `bias must be [${outChannels}]`, { weight, bias });
  }
  const g = window2d("conv2dIm2col", x.shape, [kH, kW], options, { x, weight });
  const cols = im2col(x, [kH, kW], options);
  const flatWeight = reshape(weight, [outChannels, inChannels * kH * kW]);
  const rows = matmul(cols, flatWeight, { transposeB: true, bias: bias ?? undefined });
  const image = permute(rows, [0, 2, 1]);
  return reshape(image, [g.batch, outChannels, g.outHeight, g.outWidth]);
}
