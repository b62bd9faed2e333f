/**
 * How the cpu-texture variant lays tensors out in packed textures: planes of four channels per texel,
 * the padding each pass needs, and whether everything fits the adapter's 2-D texture limit (a pure
 * function of the limits and the geometry, which the variant choice uses without a device).
 */
import type { Gpu } from "../../runtime/device.ts";
import { OpError, type Shape, type Tensor } from "../../runtime/tensor.ts";
import type { Conv2dGeometry } from "./geometry.ts";

// ---------------------------------------------------------------------------------------------------
// cpu-texture: operands packed into rgba32float textures, four channels per texel.
//
// A packed tensor is a set of planes (n, group, channel quad), each a zero-padded H' x W' image of
// texels, laid out side by side in rows of `planesPerRow` planes so large tensors fit the 2-D limit.

export interface PlaneLayout {
  planeHeight: number;
  planeWidth: number;
  planesPerRow: number;
  textureWidth: number;
  textureHeight: number;
}

export function planeLayout(
  gpu: Gpu,
  op: string,
  planes: number,
  planeHeight: number,
  planeWidth: number,
  operands: Record<string, Shape | Tensor>,
): PlaneLayout {
  const limit = gpu.limits.maxTextureDimension2D;
  const planesPerRow = Math.max(1, Math.min(planes, Math.floor(limit / planeWidth)));
  const layout = {
    planeHeight,
    planeWidth,
    planesPerRow,
    textureWidth: planesPerRow * planeWidth,
    textureHeight: Math.ceil(planes / planesPerRow) * planeHeight,
  };
  if (layout.textureWidth > limit || layout.textureHeight > limit) {
    throw new OpError(
      op,
      `variant cpu-texture needs a ${layout.textureWidth}x${layout.textureHeight} texture, over this adapter's ${limit} limit`,
      operands,
    );
  }
  return layout;
}

/** Padding of the packed gradOutput planes so every tap of the transposed convolution reads in bounds. */
function transposedPadding(
  size: number,
  outSize: number,
  stride: number,
  pad: number,
  dilation: number,
  kernel: number,
): { before: number; after: number } {
  let before = 0;
  let after = 0;
  for (let phase = 0; phase < stride; phase++) {
    const length = Math.ceil((size - phase) / stride);
    if (length <= 0) continue;
    for (let k = 0; k < kernel; k++) {
      const t = phase + pad - k * dilation;
      if (((t % stride) + stride) % stride !== 0) continue;
      const offset = Math.floor(t / stride);
      before = Math.max(before, -offset);
      after = Math.max(after, length - 1 + offset - (outSize - 1));
    }
  }
  return { before, after };
}

export interface CpuPlans {
  inputPlane: { height: number; width: number };
  gradPlane: { top: number; left: number; height: number; width: number };
  weightGradInputWidth: number;
}

export function cpuPlans(g: Conv2dGeometry): CpuPlans {
  const vertical = transposedPadding(g.height, g.outHeight, g.strideH, g.padH, g.dilationH, g.kernelHeight);
  const horizontal = transposedPadding(g.width, g.outWidth, g.strideW, g.padW, g.dilationW, g.kernelWidth);
  const paddedOutWidth = Math.ceil(g.outWidth / 4) * 4;
  return {
    inputPlane: { height: g.height + 2 * g.padH, width: g.width + 2 * g.padW },
    gradPlane: {
      top: vertical.before,
      left: horizontal.before,
      height: g.outHeight + vertical.before + vertical.after,
      width: g.outWidth + horizontal.before + horizontal.after,
    },
    // The weight gradient reads whole 4-pixel steps; the input plane must cover the last one.
    weightGradInputWidth: Math.max(
      g.width + 2 * g.padW,
      (paddedOutWidth - 1) * g.strideW + (g.kernelWidth - 1) * g.dilationW + 1,
    ),
  };
}

/** Whether every texture the cpu-texture variant needs fits this adapter's 2-D texture limit. */
export function cpuTexturesFit(
  limits: { readonly maxTextureDimension2D: number },
  g: Conv2dGeometry,
): boolean {
  const limit = limits.maxTextureDimension2D;
  const plans = cpuPlans(g);
  const taps = g.kernelHeight * g.kernelWidth;
  const fits = (planes: number, height: number, width: number) => {
    if (width > limit || height > limit) return false;
    const perRow = Math.max(1, Math.min(planes, Math.floor(limit / width)));
    return Math.ceil(planes / perRow) * height <= limit;
  };
  const inputPlanes = g.batch * g.groups * Math.ceil(g.inPerGroup / 4);
  const outputPlanes = g.batch * g.groups * Math.ceil(g.outPerGroup / 4);
  return (
    fits(inputPlanes, plans.inputPlane.height, plans.weightGradInputWidth) &&
    fits(outputPlanes, plans.gradPlane.height, plans.gradPlane.width) &&
    fits(outputPlanes, g.outHeight, Math.ceil(g.outWidth / 4) * 4) &&
    Math.ceil(g.inPerGroup / 4) * taps <= limit &&
    Math.ceil(g.outPerGroup / 4) * taps <= limit &&
    g.outChannels <= limit &&
    g.inChannels <= limit
  );
}
