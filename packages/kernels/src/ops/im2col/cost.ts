/** FLOPs and bytes of im2col and col2im, for the profiler. */
import type { Window2d } from "../common/window.ts";

/** Column entries of `g`: N x OH*OW x C*kH*kW. */
export const im2colSize = (g: Window2d): number =>
  g.batch * g.outHeight * g.outWidth * g.channels * g.kernelHeight * g.kernelWidth;

/** im2col copies: no FLOPs; every column entry read (as an input value) and written once. */
export function im2colCost(g: Window2d): { flops: number; bytes: number } {
  return { flops: 0, bytes: 8 * im2colSize(g) };
}

/** col2im adds every column entry into its input pixel. */
export function col2imCost(g: Window2d): { flops: number; bytes: number } {
  const inputSize = g.batch * g.channels * g.height * g.width;
  return { flops: im2colSize(g), bytes: 4 * (im2colSize(g) + inputSize) };
}
