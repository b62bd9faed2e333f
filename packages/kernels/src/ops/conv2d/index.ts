/**
 * 2-D convolution over NCHW images with weights [O, C/groups, kH, kW] (PyTorch's layout): stride,
 * padding and dilation per axis, groups, optional bias. Forward, the gradient with respect to the input
 * (a transposed convolution), the gradient with respect to the weight (a reduction over N*OH*OW, split
 * into chunks so it parallelises) and the bias gradient; `conv2d` records all of them on the tape.
 *
 * Layout of the op family (like ops/softmax/): `index.ts` (this file: checks, launches, gradients),
 * `choose.ts` (pure variant choice), one file per variant with its WGSL (`cpu-subgroup.ts`,
 * `cpu-texture.ts` with its packed layout in `cpu-layout.ts`, `gpu-tiled.ts`, `naive.ts`),
 * `weight-cache.ts` (the CPU variants' packed weights, once per weight version), `backward-passes.ts`
 * (partial-sum reduction, bias gradient), `geometry.ts`, `reference.ts`, `cost.ts`, `bench.ts`.
 *
 * Four variants, chosen by `chooseConv2dVariant` and forceable with `{ variant }`:
 * - "cpu-subgroup" (lavapipe with subgroups of >= 8 lanes): cpu-texture's packing with all three
 *   passes on matmul's cpu-subgroup core (cpu-subgroup.ts);
 * - "cpu-texture" (lavapipe/llvmpipe): llvmpipe turns every buffer load whose address varies per
 *   invocation into per-lane scalar loads with a bounds-check branch each, while a `textureLoad` of an
 *   rgba32float texel is one branch-free gather of four floats (measured: ~1.7x fewer instructions per
 *   convolution than the best buffer version). So operands are first packed into textures, four channels
 *   per texel and zero padding included (no bounds checks in the inner loop), and each invocation keeps
 *   an 8 output-channel x 8 pixel block in registers: per tap it loads 8 input texels and 8 weight
 *   texels (vec4 loads of four channels each) for 256 multiply-adds. No workgroup memory, no im2col.
 * - "gpu-tiled": implicit GEMM with 64x64 workgroup-memory tiles (16x16 invocations, 4x4 outputs
 *   each); the tiles are gathered straight from the NCHW tensors. 1x1 stride-1 unpadded convolutions
 *   take a plain GEMM over channels (no window arithmetic), reported as "gpu-tiled-1x1".
 * - "naive": direct convolution, one output per invocation; the benchmark's reference.
 */

import { needsGrad, record } from "../../runtime/autograd.ts";
import type { Gpu } from "../../runtime/device.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, type Shape, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkOutputFits, requireF32, sameShape } from "../common/checks.ts";
import { releaseScratchTextures, texturePool } from "../common/texture-pool.ts";
import { matmulCanUseSubgroups } from "../matmul/cpu-subgroup.ts";
import { CONV2D_BACKWARD_BIAS_WGSL, CONV2D_REDUCE_WGSL } from "./backward-passes.ts";
import { CONV2D_VARIANTS, type Conv2dVariant, chooseConv2dVariant } from "./choose.ts";
import { conv2dCost } from "./cost.ts";
import { cpuPlans, cpuTexturesFit } from "./cpu-layout.ts";
import {
  CONV2D_BACKWARD_INPUT_CPU_SUBGROUP_WGSL,
  CONV2D_BACKWARD_WEIGHT_CPU_SUBGROUP_WGSL,
  CONV2D_CPU_SUBGROUP_1X1_WGSL,
  CONV2D_CPU_SUBGROUP_WGSL,
  CONV2D_SUBGROUP_BLOCK,
  CONV2D_SUBGROUP_WEIGHT_BLOCK,
} from "./cpu-subgroup.ts";
import {
  CONV2D_BACKWARD_INPUT_CPU_WGSL,
  CONV2D_BACKWARD_WEIGHT_CPU_WGSL,
  CONV2D_CPU_1X1_WGSL,
  CONV2D_CPU_WGSL,
  CONV2D_PACK_WEIGHTS_WGSL,
  CONV2D_PACK_WGSL,
  packPlanes,
} from "./cpu-texture.ts";
import {
  type Conv2dGeometry,
  type Conv2dOptions,
  conv2dGeometry,
  conv2dOutputShape,
  geometryParams,
  isPointwiseConv2d,
} from "./geometry.ts";
import {
  TILED_BACKWARD_INPUT,
  TILED_BACKWARD_WEIGHT,
  TILED_FORWARD,
  tiledParams,
  tiledSource,
  tiledWorkgroups,
} from "./gpu-tiled.ts";
import { conv2dHalf } from "./half.ts";
import {
  CONV2D_BACKWARD_INPUT_NAIVE_WGSL,
  CONV2D_BACKWARD_WEIGHT_NAIVE_WGSL,
  CONV2D_NAIVE_WGSL,
} from "./naive.ts";
import { packedWeights, releaseWeightCache } from "./weight-cache.ts";

export { CONV2D_VARIANTS, type Conv2dVariant, chooseConv2dVariant } from "./choose.ts";
export { conv2dCost } from "./cost.ts";
export {
  type Conv2dGeometry,
  type Conv2dOptions,
  conv2dGeometry,
  conv2dOutputShape,
  isPointwiseConv2d,
} from "./geometry.ts";
export { type Conv2dParams, conv2dOpReference, conv2dReference } from "./reference.ts";

/**
 * Every variant's kernels by pass, exactly as launched (`cxr kernels dump conv2d`); "-1x1" passes run
 * for 1x1 stride-1 unpadded convolutions.
 */
export const CONV2D_KERNELS: Readonly<Record<Conv2dVariant, Readonly<Record<string, string>>>> = {
  "cpu-subgroup": {
    packPlanes: CONV2D_PACK_WGSL,
    packWeights: CONV2D_PACK_WEIGHTS_WGSL,
    forward: CONV2D_CPU_SUBGROUP_WGSL,
    "forward-1x1": CONV2D_CPU_SUBGROUP_1X1_WGSL,
    backwardInput: CONV2D_BACKWARD_INPUT_CPU_SUBGROUP_WGSL,
    backwardWeight: CONV2D_BACKWARD_WEIGHT_CPU_SUBGROUP_WGSL,
    reduce: CONV2D_REDUCE_WGSL,
    backwardBias: CONV2D_BACKWARD_BIAS_WGSL,
  },
  "cpu-texture": {
    packPlanes: CONV2D_PACK_WGSL,
    packWeights: CONV2D_PACK_WEIGHTS_WGSL,
    forward: CONV2D_CPU_WGSL,
    "forward-1x1": CONV2D_CPU_1X1_WGSL,
    backwardInput: CONV2D_BACKWARD_INPUT_CPU_WGSL,
    backwardWeight: CONV2D_BACKWARD_WEIGHT_CPU_WGSL,
    reduce: CONV2D_REDUCE_WGSL,
    backwardBias: CONV2D_BACKWARD_BIAS_WGSL,
  },
  "gpu-tiled": {
    forward: tiledSource(TILED_FORWARD, "forward", false),
    "forward-1x1": tiledSource(TILED_FORWARD, "forward", true),
    backwardInput: tiledSource(TILED_BACKWARD_INPUT, "backwardInput", false),
    "backwardInput-1x1": tiledSource(TILED_BACKWARD_INPUT, "backwardInput", true),
    backwardWeight: tiledSource(TILED_BACKWARD_WEIGHT, "backwardWeight", false),
    "backwardWeight-1x1": tiledSource(TILED_BACKWARD_WEIGHT, "backwardWeight", true),
    reduce: CONV2D_REDUCE_WGSL,
    backwardBias: CONV2D_BACKWARD_BIAS_WGSL,
  },
  naive: {
    forward: CONV2D_NAIVE_WGSL,
    backwardInput: CONV2D_BACKWARD_INPUT_NAIVE_WGSL,
    backwardWeight: CONV2D_BACKWARD_WEIGHT_NAIVE_WGSL,
    backwardBias: CONV2D_BACKWARD_BIAS_WGSL,
  },
};

/**
 * Frees the idle scratch textures of the CPU variants (the one pool conv2d and matmul share), e.g.
 * between training and sampling.
 */
export function releaseConv2dScratch(gpu: Gpu): void {
  releaseWeightCache(gpu);
  releaseScratchTextures(gpu);
}

function resolveVariant(
  gpu: Gpu,
  op: string,
  g: Conv2dGeometry,
  options: Conv2dOptions,
  operands: Record<string, Tensor>,
) {
  const variant = options.variant ?? chooseConv2dVariant(gpu, g);
  if (!CONV2D_VARIANTS.includes(variant)) {
    throw new OpError(op, `unknown variant "${variant}" (expected ${CONV2D_VARIANTS.join(", ")})`, operands);
  }
  if ((variant === "cpu-texture" || variant === "cpu-subgroup") && !cpuTexturesFit(gpu.limits, g)) {
    throw new OpError(
      op,
      `variant ${variant} needs textures larger than this adapter's ${gpu.limits.maxTextureDimension2D} limit`,
      operands,
    );
  }
  if (variant === "cpu-subgroup" && !matmulCanUseSubgroups(gpu)) {
    throw new OpError(
      op,
      "variant cpu-subgroup needs the 'subgroups' feature with >= 8 lanes, which this adapter lacks",
      operands,
    );
  }
  return variant;
}

/**
 * A CPU pass's work item: `channels` output (forward, weight gradient) or input channels (input
 * gradient) by `pixels` pixels (weight gradient: column pairs), run by `lanes` invocations (1: one
 * invocation per item, in workgroups of 64; 8: one subgroup-sized workgroup per item).
 */
interface CpuKernel {
  code: string;
  code1x1: string;
  channels: number;
  pixels: number;
  lanes: number;
}

const SUBGROUP_ITEM = {
  channels: CONV2D_SUBGROUP_BLOCK.channels,
  pixels: CONV2D_SUBGROUP_BLOCK.pixels * CONV2D_SUBGROUP_BLOCK.workgroupSize,
  lanes: CONV2D_SUBGROUP_BLOCK.workgroupSize,
};

const CPU_KERNELS: Record<"cpu-texture" | "cpu-subgroup", Record<Pass, CpuKernel>> = {
  "cpu-texture": {
    forward: { code: CONV2D_CPU_WGSL, code1x1: CONV2D_CPU_1X1_WGSL, channels: 8, pixels: 8, lanes: 1 },
    backwardInput: {
      code: CONV2D_BACKWARD_INPUT_CPU_WGSL,
      code1x1: CONV2D_BACKWARD_INPUT_CPU_WGSL,
      channels: 8,
      pixels: 8,
      lanes: 1,
    },
    backwardWeight: {
      code: CONV2D_BACKWARD_WEIGHT_CPU_WGSL,
      code1x1: CONV2D_BACKWARD_WEIGHT_CPU_WGSL,
      channels: 8,
      pixels: 1,
      lanes: 1,
    },
  },
  "cpu-subgroup": {
    forward: { code: CONV2D_CPU_SUBGROUP_WGSL, code1x1: CONV2D_CPU_SUBGROUP_1X1_WGSL, ...SUBGROUP_ITEM },
    backwardInput: {
      code: CONV2D_BACKWARD_INPUT_CPU_SUBGROUP_WGSL,
      code1x1: CONV2D_BACKWARD_INPUT_CPU_SUBGROUP_WGSL,
      ...SUBGROUP_ITEM,
    },
    backwardWeight: {
      code: CONV2D_BACKWARD_WEIGHT_CPU_SUBGROUP_WGSL,
      code1x1: CONV2D_BACKWARD_WEIGHT_CPU_SUBGROUP_WGSL,
      channels: CONV2D_SUBGROUP_WEIGHT_BLOCK.channels,
      pixels: CONV2D_SUBGROUP_BLOCK.workgroupSize,
      lanes: CONV2D_SUBGROUP_BLOCK.workgroupSize,
    },
  },
};

type Pass = "forward" | "backwardInput" | "backwardWeight";

/** Items of a CPU pass over `channels` x `pixels` per image, `images` images. */
function cpuBlocks(kernel: CpuKernel, channels: number, pixels: number, images: number) {
  const channelBlocks = Math.ceil(channels / kernel.channels);
  const pixelItems = Math.ceil(pixels / kernel.pixels);
  return { channelBlocks, pixelItems, total: images * channelBlocks * pixelItems };
}

function cpuWorkgroups(kernel: CpuKernel, items: number) {
  return kernel.lanes === 1 ? grid(items, 64) : grid(items * kernel.lanes, kernel.lanes);
}

// ---------------------------------------------------------------------------------------------------
// Forward.

/**
 * y = conv2d(x, w) + bias: x [N, C, H, W], w [O, C/groups, kH, kW], bias [O] or none; y [N, O, OH, OW].
 * Recorded on the autograd tape when x, w or bias needs a gradient.
 */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor | null, options: Conv2dOptions = {}): Tensor {
  if (x.dtype === "f16") return conv2dHalf(x, w, bias ?? null, options); // half.ts: inference only
  const operands: Record<string, Tensor> = bias ? { x, w, bias } : { x, w };
  requireF32("conv2d", operands);
  const g = conv2dGeometry("conv2d", x.shape, w.shape, options);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== g.outChannels)) {
    throw new OpError("conv2d", `bias must be [${g.outChannels}]`, operands);
  }
  const gpu = x.gpu;
  const variant = resolveVariant(gpu, "conv2d", g, options, operands);
  checkOutputFits(gpu, "conv2d", conv2dOutputShape(g), operands);
  const y = Tensor.empty(gpu, conv2dOutputShape(g));
  const cost = conv2dCost(g);
  const hasBias = bias ? 1 : 0;
  // Kernels without a bias bind the weight in its slot (any read-only buffer will do).
  const biasBinding = bias ?? w;
  const pointwise = isPointwiseConv2d(g);
  if (variant === "naive") {
    launch(
      gpu,
      { name: "conv2d", variant, code: CONV2D_NAIVE_WGSL },
      {
        bindings: [x, w, biasBinding, y],
        params: geometryParams(g).u32(hasBias),
        workgroups: grid(y.size, 64),
        ...cost,
      },
    );
  } else if (variant === "gpu-tiled") {
    const taps = g.inPerGroup * g.kernelHeight * g.kernelWidth;
    const pixels = g.outHeight * g.outWidth;
    launch(
      gpu,
      {
        name: "conv2d",
        variant: pointwise ? "gpu-tiled-1x1" : variant,
        code: tiledSource(TILED_FORWARD, "forward", pointwise),
      },
      {
        bindings: [x, w, biasBinding, y],
        params: tiledParams(g, g.outPerGroup, pixels, taps, taps, bias !== undefined && bias !== null),
        workgroups: tiledWorkgroups("conv2d", g.outPerGroup, pixels, g.batch * g.groups),
        ...cost,
      },
    );
  } else {
    const plans = cpuPlans(g);
    const input = packPlanes(gpu, "conv2d", x, g.groups, g.inPerGroup, {
      top: g.padH,
      left: g.padW,
      planeHeight: plans.inputPlane.height,
      planeWidth: plans.inputPlane.width,
    });
    const weights = packedWeights(gpu, "conv2d", g, w, false);
    const kernel = CPU_KERNELS[variant].forward;
    const { channelBlocks, pixelItems, total } = cpuBlocks(
      kernel,
      g.outPerGroup,
      g.outHeight * g.outWidth,
      g.batch * g.groups,
    );
    launch(
      gpu,
      {
        name: "conv2d",
        variant: pointwise ? `${variant}-1x1` : variant,
        code: pointwise ? kernel.code1x1 : kernel.code,
      },
      {
        bindings: [input.view, weights, biasBinding, y],
        params: geometryParams(g).u32(
          input.layout.planeHeight,
          input.layout.planeWidth,
          input.layout.planesPerRow,
          pixelItems,
          channelBlocks,
          total,
          hasBias,
        ),
        workgroups: cpuWorkgroups(kernel, total),
        ...cost,
      },
    );
    texturePool(gpu).release(input.scratch);
  }
  const inputs = bias ? [x, w, bias] : [x, w];
  if (needsGrad(...inputs)) {
    const forced = { ...options, variant };
    record("conv2d", inputs, [y], ([gradOutput]) => [
      x.requiresGrad ? conv2dBackwardInput(gradOutput!, w, x.shape, forced) : null,
      w.requiresGrad ? conv2dBackwardWeight(gradOutput!, x, w.shape, forced) : null,
      ...(bias ? [bias.requiresGrad ? conv2dBackwardBias(gradOutput!) : null] : []),
    ]);
  }
  return y;
}

// ---------------------------------------------------------------------------------------------------
// Backward.

function checkGradOutput(
  op: string,
  gradOutput: Tensor,
  g: Conv2dGeometry,
  operands: Record<string, Tensor>,
) {
  const expected = conv2dOutputShape(g);
  if (!sameShape(gradOutput.shape, expected)) {
    throw new OpError(op, `gradOutput must be [${expected.join(", ")}]`, operands);
  }
}

/** Gradient with respect to the input: dx [N, C, H, W] from gradOutput [N, O, OH, OW] and w. */
export function conv2dBackwardInput(
  gradOutput: Tensor,
  w: Tensor,
  inputShape: Shape,
  options: Conv2dOptions = {},
): Tensor {
  const op = "conv2dBackwardInput";
  const operands = { gradOutput, w };
  requireF32(op, operands);
  const g = conv2dGeometry(op, inputShape, w.shape, options);
  checkGradOutput(op, gradOutput, g, operands);
  const gpu = w.gpu;
  const variant = resolveVariant(gpu, op, g, options, operands);
  const gradInput = Tensor.empty(gpu, inputShape);
  const cost = conv2dCost(g);
  if (variant === "naive") {
    launch(
      gpu,
      { name: op, variant, code: CONV2D_BACKWARD_INPUT_NAIVE_WGSL },
      {
        bindings: [gradOutput, w, gradInput],
        params: geometryParams(g),
        workgroups: grid(gradInput.size, 64),
        ...cost,
      },
    );
  } else if (variant === "gpu-tiled") {
    const pointwise = isPointwiseConv2d(g);
    const taps = g.outPerGroup * g.kernelHeight * g.kernelWidth;
    const pixels = g.height * g.width;
    launch(
      gpu,
      {
        name: op,
        variant: pointwise ? "gpu-tiled-1x1" : variant,
        code: tiledSource(TILED_BACKWARD_INPUT, "backwardInput", pointwise),
      },
      {
        bindings: [gradOutput, w, gradInput],
        params: tiledParams(g, g.inPerGroup, pixels, taps, taps, false),
        workgroups: tiledWorkgroups(op, g.inPerGroup, pixels, g.batch * g.groups),
        ...cost,
      },
    );
  } else {
    const plan = cpuPlans(g).gradPlane;
    const packed = packPlanes(gpu, op, gradOutput, g.groups, g.outPerGroup, {
      top: plan.top,
      left: plan.left,
      planeHeight: plan.height,
      planeWidth: plan.width,
    });
    const weights = packedWeights(gpu, op, g, w, variant === "cpu-texture");
    const largestPhase = Math.ceil(g.height / g.strideH) * Math.ceil(g.width / g.strideW);
    const kernel = CPU_KERNELS[variant].backwardInput;
    const images = g.batch * g.groups * g.strideH * g.strideW;
    const { channelBlocks, pixelItems, total } = cpuBlocks(kernel, g.inPerGroup, largestPhase, images);
    launch(
      gpu,
      { name: op, variant, code: kernel.code },
      {
        bindings: [packed.view, weights, gradInput],
        params: geometryParams(g).u32(
          packed.layout.planeHeight,
          packed.layout.planeWidth,
          packed.layout.planesPerRow,
          plan.top,
          plan.left,
          pixelItems,
          channelBlocks,
          total,
        ),
        workgroups: cpuWorkgroups(kernel, total),
        ...cost,
      },
    );
    texturePool(gpu).release(packed.scratch);
  }
  return gradInput;
}

/** How many chunks to split a reduction of `length` into so that `lanes * splits` reaches `target`. */
function splitCount(lanes: number, length: number, target: number): number {
  return Math.max(1, Math.min(length, Math.ceil(target / Math.max(lanes, 1))));
}

/** Gradient with respect to the weight: dw [O, C/groups, kH, kW] = sum over n, oy, ox of
 * gradOutput x input window; the sum is split into chunks reduced in a second pass. */
export function conv2dBackwardWeight(
  gradOutput: Tensor,
  x: Tensor,
  weightShape: Shape,
  options: Conv2dOptions = {},
): Tensor {
  const op = "conv2dBackwardWeight";
  const operands = { gradOutput, x };
  requireF32(op, operands);
  const g = conv2dGeometry(op, x.shape, weightShape, options);
  checkGradOutput(op, gradOutput, g, operands);
  const gpu = x.gpu;
  const variant = resolveVariant(gpu, op, g, options, operands);
  const gradWeight = Tensor.empty(gpu, weightShape);
  const cost = conv2dCost(g);
  const taps = g.inPerGroup * g.kernelHeight * g.kernelWidth;
  if (variant === "naive") {
    launch(
      gpu,
      { name: op, variant, code: CONV2D_BACKWARD_WEIGHT_NAIVE_WGSL },
      {
        bindings: [gradOutput, x, gradWeight],
        params: geometryParams(g),
        workgroups: grid(gradWeight.size, 64),
        ...cost,
      },
    );
    return gradWeight;
  }
  let splits: number;
  let partial: Tensor;
  if (variant === "gpu-tiled") {
    const reduction = g.batch * g.outHeight * g.outWidth;
    const tiles = Math.ceil(g.outPerGroup / 64) * Math.ceil(taps / 64) * g.groups;
    const wanted = splitCount(tiles, Math.ceil(reduction / 64), 128);
    const chunk = Math.ceil(Math.ceil(reduction / wanted) / 16) * 16;
    splits = Math.ceil(reduction / chunk);
    partial = splits === 1 ? gradWeight : Tensor.empty(gpu, [splits, gradWeight.size]);
    const pointwise = isPointwiseConv2d(g);
    launch(
      gpu,
      {
        name: op,
        variant: pointwise ? "gpu-tiled-1x1" : variant,
        code: tiledSource(TILED_BACKWARD_WEIGHT, "backwardWeight", pointwise),
      },
      {
        bindings: [gradOutput, x, partial],
        params: tiledParams(g, g.outPerGroup, taps, reduction, chunk, false),
        workgroups: tiledWorkgroups(op, g.outPerGroup, taps, g.groups * splits),
        ...cost,
      },
    );
  } else {
    const plans = cpuPlans(g);
    const paddedOutWidth = Math.ceil(g.outWidth / 4) * 4;
    const grad = packPlanes(gpu, op, gradOutput, g.groups, g.outPerGroup, {
      top: 0,
      left: 0,
      planeHeight: g.outHeight,
      planeWidth: paddedOutWidth,
    });
    const input = packPlanes(gpu, op, x, g.groups, g.inPerGroup, {
      top: g.padH,
      left: g.padW,
      planeHeight: plans.inputPlane.height,
      planeWidth: plans.weightGradInputWidth,
    });
    const kernel = CPU_KERNELS[variant].backwardWeight;
    const columnPairs = Math.ceil((Math.ceil(g.inPerGroup / 4) * g.kernelHeight * g.kernelWidth) / 2);
    const columnItems = Math.ceil(columnPairs / kernel.pixels);
    const channelBlocks = Math.ceil(g.outPerGroup / kernel.channels);
    const rows = g.batch * g.outHeight;
    const lanes = g.groups * channelBlocks * columnItems * kernel.lanes;
    const wanted = splitCount(lanes, rows, 2048);
    const rowsPerChunk = Math.ceil(rows / wanted);
    splits = Math.ceil(rows / rowsPerChunk);
    partial = splits === 1 ? gradWeight : Tensor.empty(gpu, [splits, gradWeight.size]);
    const total = g.groups * splits * channelBlocks * columnItems;
    launch(
      gpu,
      {
        name: op,
        variant: isPointwiseConv2d(g) ? `${variant}-1x1` : variant,
        code: kernel.code,
      },
      {
        bindings: [grad.view, input.view, partial],
        params: geometryParams(g).u32(
          grad.layout.planeHeight,
          grad.layout.planeWidth,
          grad.layout.planesPerRow,
          input.layout.planeHeight,
          input.layout.planeWidth,
          input.layout.planesPerRow,
          columnItems,
          channelBlocks,
          splits,
          rowsPerChunk,
          total,
        ),
        workgroups: cpuWorkgroups(kernel, total),
        ...cost,
      },
    );
    texturePool(gpu).release(grad.scratch);
    texturePool(gpu).release(input.scratch);
  }
  if (splits > 1) {
    launch(
      gpu,
      { name: "conv2dReduce", code: CONV2D_REDUCE_WGSL },
      {
        bindings: [partial, gradWeight],
        params: new Params().u32(gradWeight.size, splits),
        workgroups: grid(gradWeight.size, 64),
        flops: partial.size,
        bytes: 4 * (partial.size + gradWeight.size),
      },
    );
    partial.release();
  }
  return gradWeight;
}

/** Gradient with respect to the bias: db [O] = sum of gradOutput over n, oy, ox. */
export function conv2dBackwardBias(gradOutput: Tensor): Tensor {
  const op = "conv2dBackwardBias";
  requireF32(op, { gradOutput });
  if (gradOutput.rank !== 4) throw new OpError(op, "gradOutput must be [N, O, OH, OW]", { gradOutput });
  const [batch, channels, height, width] = gradOutput.shape;
  const gradBias = Tensor.empty(gradOutput.gpu, [channels]);
  launch(
    gradOutput.gpu,
    { name: op, code: CONV2D_BACKWARD_BIAS_WGSL },
    {
      bindings: [gradOutput, gradBias],
      params: new Params().u32(batch, channels, height * width),
      workgroups: grid(channels, 64),
      flops: gradOutput.size,
      bytes: 4 * (gradOutput.size + channels),
    },
  );
  return gradBias;
}
