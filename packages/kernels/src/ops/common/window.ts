/**
 * The one sliding-window geometry of the 2-D window ops (conv2d, im2col, the poolings): an input
 * [N, C, H, W], a kH x kW kernel moved with a stride, zero padding and dilation per axis, and the
 * output size that results. Validation names the op and the operands; the helpers give the input
 * position a window tap reads, for the float64 references.
 */
import { OpError, type Shape, type Tensor } from "../../runtime/tensor.ts";

/** A size per axis: one number for both, or [height, width]. */
export type Pair = number | [number, number];

/** Stride (default 1), zero padding (default 0) and dilation (default 1) of a window, per axis. */
export interface WindowOptions {
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
}

/** Every size of one window over an [N, C, H, W] input, validated. */
export interface Window2d {
  batch: number;
  channels: number;
  height: number;
  width: number;
  kernelHeight: number;
  kernelWidth: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  dilationH: number;
  dilationW: number;
  outHeight: number;
  outWidth: number;
}

/** `value` as [height, width] (`fallback` when absent); every entry an integer >= `minimum`. */
export function pairOf(
  op: string,
  name: string,
  value: Pair | undefined,
  fallback: number,
  minimum: number,
): [number, number] {
  const pair: [number, number] =
    value === undefined ? [fallback, fallback] : typeof value === "number" ? [value, value] : value;
  if (pair.length !== 2 || pair.some((item) => !Number.isInteger(item) || item < minimum)) {
    throw new OpError(op, `${name} must be an integer >= ${minimum} or a pair of them, got ${String(value)}`);
  }
  return pair;
}

/**
 * Validates the input shape, kernel and options of a window op and works out the output size:
 * out = floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1 per axis, which must be >= 1.
 * `operands` are the shapes the errors list.
 */
export function window2d(
  op: string,
  inputShape: Shape,
  kernel: Pair,
  options: WindowOptions,
  operands: Readonly<Record<string, Shape | Tensor>> = { x: inputShape },
): Window2d {
  if (inputShape.length !== 4) throw new OpError(op, "input must be [N, C, H, W]", operands);
  const [batch, channels, height, width] = inputShape;
  const [kernelHeight, kernelWidth] = pairOf(op, "kernel", kernel, 1, 1);
  const [strideH, strideW] = pairOf(op, "stride", options.stride, 1, 1);
  const [padH, padW] = pairOf(op, "padding", options.padding, 0, 0);
  const [dilationH, dilationW] = pairOf(op, "dilation", options.dilation, 1, 1);
  const outHeight = Math.floor((height + 2 * padH - dilationH * (kernelHeight - 1) - 1) / strideH) + 1;
  const outWidth = Math.floor((width + 2 * padW - dilationW * (kernelWidth - 1) - 1) / strideW) + 1;
  if (outHeight < 1 || outWidth < 1) {
    const dilated = dilationH !== 1 || dilationW !== 1 ? ` dilated ${dilationH}x${dilationW}` : "";
    throw new OpError(
      op,
      `kernel ${kernelHeight}x${kernelWidth}${dilated} is larger than the padded input (output ${outHeight}x${outWidth})`,
      operands,
    );
  }
  return {
    batch,
    channels,
    height,
    width,
    kernelHeight,
    kernelWidth,
    strideH,
    strideW,
    padH,
    padW,
    dilationH,
    dilationW,
    outHeight,
    outWidth,
  };
}

/** The input row that output row `oy` reads at kernel row `ky` (outside [0, height) in the padding). */
export const windowInputRow = (g: Window2d, oy: number, ky: number): number =>
  oy * g.strideH - g.padH + ky * g.dilationH;

/** The input column that output column `ox` reads at kernel column `kx` (outside [0, width) in the padding). */
export const windowInputColumn = (g: Window2d, ox: number, kx: number): number =>
  ox * g.strideW - g.padW + kx * g.dilationW;

/** Whether input position (iy, ix) lies inside the image rather than in the padding. */
export const insideInput = (g: Window2d, iy: number, ix: number): boolean =>
  iy >= 0 && iy < g.height && ix >= 0 && ix < g.width;

/** The output shape [N, channels, outHeight, outWidth]. */
export const windowOutputShape = (g: Window2d, channels: number): Shape => [
  g.batch,
  channels,
  g.outHeight,
  g.outWidth,
];
