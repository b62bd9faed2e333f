/**
 * The sizes of one convolution: validated shapes and options, the output shape, the 1x1 fast-path
 * test, and the geometry uniforms every conv2d kernel starts with.
 */
import { OpError, type Shape } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { type Window2d, type WindowOptions, window2d, windowOutputShape } from "../common/window.ts";
import type { Conv2dVariant } from "./choose.ts";

/** Stride, padding and dilation (ops/common/window.ts), groups, and an optional forced variant. */
export interface Conv2dOptions extends WindowOptions {
  groups?: number;
  /** Force a variant (tests run every variant on every adapter; benchmarks time the naive one). */
  variant?: Conv2dVariant;
}

/** Every size of one convolution, validated: the shared window geometry plus channels and groups. */
export interface Conv2dGeometry extends Window2d {
  /** Input channels (the window's `channels`). */
  inChannels: number;
  outChannels: number;
  groups: number;
  inPerGroup: number;
  outPerGroup: number;
}

/** Validates shapes and options; throws an OpError naming the op and the shapes. */
export function conv2dGeometry(
  op: string,
  inputShape: Shape,
  weightShape: Shape,
  options: Conv2dOptions = {},
): Conv2dGeometry {
  const shapes = { x: inputShape, w: weightShape };
  if (inputShape.length !== 4) throw new OpError(op, "input must be [N, C, H, W]", shapes);
  if (weightShape.length !== 4) throw new OpError(op, "weight must be [O, C/groups, kH, kW]", shapes);
  const groups = options.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1)
    throw new OpError(op, `groups must be a positive integer`, shapes);
  const inChannels = inputShape[1];
  const [outChannels, inPerGroup, kernelHeight, kernelWidth] = weightShape;
  if (inPerGroup * groups !== inChannels) {
    throw new OpError(
      op,
      `input has ${inChannels} channels but the weight expects ${inPerGroup} x ${groups} groups`,
      shapes,
    );
  }
  if (outChannels % groups !== 0) {
    throw new OpError(op, `${outChannels} output channels are not divisible by ${groups} groups`, shapes);
  }
  const window = window2d(op, inputShape, [kernelHeight, kernelWidth], options, shapes);
  return { ...window, inChannels, outChannels, groups, inPerGroup, outPerGroup: outChannels / groups };
}

export const conv2dOutputShape = (g: Conv2dGeometry): Shape => windowOutputShape(g, g.outChannels);

/** True for convolutions that are a plain GEMM over channels (1x1 kernel, stride 1, no padding). */
export function isPointwiseConv2d(g: Conv2dGeometry): boolean {
  return (
    g.kernelHeight === 1 &&
    g.kernelWidth === 1 &&
    g.strideH === 1 &&
    g.strideW === 1 &&
    g.padH === 0 &&
    g.padW === 0
  );
}

// ---------------------------------------------------------------------------------------------------
// Uniforms shared by every kernel: the geometry first, then each kernel's own fields.

export const GEOMETRY_FIELDS = `N: u32, C: u32, H: u32, W: u32, O: u32, OH: u32, OW: u32, groups: u32,
  Cg: u32, Og: u32, kH: u32, kW: u32, sH: u32, sW: u32, pH: u32, pW: u32, dH: u32, dW: u32`;

export function geometryParams(g: Conv2dGeometry): Params {
  return new Params().u32(
    g.batch,
    g.inChannels,
    g.height,
    g.width,
    g.outChannels,
    g.outHeight,
    g.outWidth,
    g.groups,
    g.inPerGroup,
    g.outPerGroup,
    g.kernelHeight,
    g.kernelWidth,
    g.strideH,
    g.strideW,
    g.padH,
    g.padW,
    g.dilationH,
    g.dilationW,
  );
}
