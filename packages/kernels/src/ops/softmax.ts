/**
 * Softmax along one axis, numerically stable (online max-and-sum, Milakov & Gimelshein 2018), with an
 * optional scale folded in (y = softmax(scale * x)) and an optional per-batch mask over the softmax axis
 * (what attention's key mask needs). Two variants: one invocation per row (CPU adapters: no workgroup
 * memory, no barriers) and one workgroup per row with a workgroup-memory reduction (GPUs, long rows).
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, type Shape, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export type SoftmaxVariant = "cpu-rows" | "gpu-workgroup";
export const SOFTMAX_VARIANTS: readonly SoftmaxVariant[] = ["cpu-rows", "gpu-workgroup"];

export interface SoftmaxOptions {
  /** Multiplies the input before the softmax (attention's 1/sqrt(D)). Default 1. */
  scale?: number;
  /**
   * [x.shape[0], length] of 1 (keep) / 0 (drop) over the softmax axis, which must be the last axis.
   * Masked entries get probability 0; a row with every entry masked is all zeros.
   */
  mask?: Tensor;
  /** Force a variant (tests, benchmarks); default `chooseSoftmaxVariant`. */
  variant?: SoftmaxVariant;
}

/** Threads per row in the workgroup variant (each later reads all partials, so not more). */
const WORKGROUP_ROW_THREADS = 64;

/** Bindings and helpers shared by all softmax kernels. Rows: `rows` of `length` values `stride` apart. */
const SOFTMAX_COMMON_WGSL = `
struct Params { rows: u32, length: u32, stride: u32, rowsPerMaskRow: u32, scale: f32, useMask: u32 }
@group(0) @binding({{paramsBinding}}) var<uniform> params: Params;
// Sentinel below every real score; finite so no inf arithmetic is needed (WGSL may assume finite math).
const NEG_BIG: f32 = -3.0e38;
// Differences are taken before the conversion to base 2, so inputs near the f32 range stay finite.
const LOG2E: f32 = 1.4426950408889634;
fn rowBase(row: u32) -> u32 {
  let outer = row / params.stride;
  return outer * params.length * params.stride + row % params.stride;
}
${LINEAR_INDEX_WGSL}`;

/** Forward kernels also read the mask; backward needs none (masked probabilities are already 0). */
const SOFTMAX_FORWARD_BINDINGS_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
fn keeps(row: u32, j: u32) -> bool {
  if (params.useMask == 0u) { return true; }
  return mask[(row / params.rowsPerMaskRow) * params.length + j] != 0.0;
}`;

const SOFTMAX_BACKWARD_BINDINGS_WGSL = `
@group(0) @binding(0) var<storage, read> probabilities: array<f32>;
@group(0) @binding(1) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;`;

/** One invocation per row: online max and sum in one pass, then the normalised write. */
export const SOFTMAX_CPU_WGSL = wgsl(
  `
${SOFTMAX_FORWARD_BINDINGS_WGSL}
${SOFTMAX_COMMON_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  let base = rowBase(row);
  var runningMax = NEG_BIG;
  var runningSum = 0.0;
  for (var j = 0u; j < params.length; j++) {
    if (keeps(row, j)) {
      let x = input[base + j * params.stride] * params.scale;
      let newMax = max(runningMax, x);
      runningSum = runningSum * exp2((runningMax - newMax) * LOG2E) + exp2((x - newMax) * LOG2E);
      runningMax = newMax;
    }
  }
  let inverseSum = select(0.0, 1.0 / runningSum, runningSum > 0.0);
  for (var j = 0u; j < params.length; j++) {
    let index = base + j * params.stride;
    let p = exp2((input[index] * params.scale - runningMax) * LOG2E) * inverseSum;
    output[index] = select(0.0, p, keeps(row, j));
  }
}`,
  { paramsBinding: 3 },
);

/** One workgroup per row: each thread reduces a strided slice, then every thread merges the partial (max, sum) pairs. */
export const SOFTMAX_WORKGROUP_WGSL = wgsl(
  `
${SOFTMAX_FORWARD_BINDINGS_WGSL}
${SOFTMAX_COMMON_WGSL}
const THREADS: u32 = {{threads}}u;
var<workgroup> partialMax: array<f32, THREADS>;
var<workgroup> partialSum: array<f32, THREADS>;
@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  // Every thread of a row's workgroup reaches each barrier; rows past the end just compute nothing.
  let unclampedRow = wid.x + wid.y * groups.x;
  let rowInRange = unclampedRow < params.rows;
  let row = min(unclampedRow, params.rows - 1u);
  let base = rowBase(row);
  var runningMax = NEG_BIG;
  var runningSum = 0.0;
  for (var j = lane; j < params.length; j += THREADS) {
    if (keeps(row, j)) {
      let x = input[base + j * params.stride] * params.scale;
      let newMax = max(runningMax, x);
      runningSum = runningSum * exp2((runningMax - newMax) * LOG2E) + exp2((x - newMax) * LOG2E);
      runningMax = newMax;
    }
  }
  partialMax[lane] = runningMax;
  partialSum[lane] = runningSum;
  workgroupBarrier();
  // Every thread merges all partials itself: one barrier instead of a tree of them (a barrier inside a
  // loop costs llvmpipe seconds of compile time), and the reads are broadcasts, free of bank conflicts.
  var rowMax = NEG_BIG;
  for (var t = 0u; t < THREADS; t++) { rowMax = max(rowMax, partialMax[t]); }
  var rowSum = 0.0;
  for (var t = 0u; t < THREADS; t++) { rowSum += partialSum[t] * exp2((partialMax[t] - rowMax) * LOG2E); }
  let inverseSum = select(0.0, 1.0 / rowSum, rowSum > 0.0);
  if (!rowInRange) { return; }
  for (var j = lane; j < params.length; j += THREADS) {
    let index = base + j * params.stride;
    let p = exp2((input[index] * params.scale - rowMax) * LOG2E) * inverseSum;
    output[index] = select(0.0, p, keeps(row, j));
  }
}`,
  { paramsBinding: 3, threads: WORKGROUP_ROW_THREADS },
);

/** dx = scale * y * (dy - sum(dy * y)), one invocation per row. */
export const SOFTMAX_BACKWARD_CPU_WGSL = wgsl(
  `
${SOFTMAX_BACKWARD_BINDINGS_WGSL}
${SOFTMAX_COMMON_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  let base = rowBase(row);
  var weighted = 0.0;
  for (var j = 0u; j < params.length; j++) {
    let index = base + j * params.stride;
    weighted += gradOutput[index] * probabilities[index];
  }
  for (var j = 0u; j < params.length; j++) {
    let index = base + j * params.stride;
    gradInput[index] = params.scale * probabilities[index] * (gradOutput[index] - weighted);
  }
}`,
  { paramsBinding: 3 },
);

/** The same backward with one workgroup per row: strided partial dot products, merged after one barrier. */
export const SOFTMAX_BACKWARD_WORKGROUP_WGSL = wgsl(
  `
${SOFTMAX_BACKWARD_BINDINGS_WGSL}
${SOFTMAX_COMMON_WGSL}
const THREADS: u32 = {{threads}}u;
var<workgroup> partialDot: array<f32, THREADS>;
@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let unclampedRow = wid.x + wid.y * groups.x;
  let rowInRange = unclampedRow < params.rows;
  let row = min(unclampedRow, params.rows - 1u);
  let base = rowBase(row);
  var weighted = 0.0;
  for (var j = lane; j < params.length; j += THREADS) {
    let index = base + j * params.stride;
    weighted += gradOutput[index] * probabilities[index];
  }
  partialDot[lane] = weighted;
  workgroupBarrier();
  var rowDot = 0.0;
  for (var t = 0u; t < THREADS; t++) { rowDot += partialDot[t]; }
  if (!rowInRange) { return; }
  for (var j = lane; j < params.length; j += THREADS) {
    let index = base + j * params.stride;
    gradInput[index] = params.scale * probabilities[index] * (gradOutput[index] - rowDot);
  }
}`,
  { paramsBinding: 3, threads: WORKGROUP_ROW_THREADS },
);

/** Rows of the softmax: how many, how long, how far apart consecutive entries of a row lie. */
export interface SoftmaxLayout {
  rows: number;
  length: number;
  stride: number;
}

export function softmaxLayout(shape: Shape, axis: number): SoftmaxLayout {
  const length = shape[axis];
  let stride = 1;
  for (let dim = axis + 1; dim < shape.length; dim++) stride *= shape[dim];
  const size = shape.reduce((a, b) => a * b, 1);
  return { rows: size / length, length, stride };
}

/**
 * Per-row threads pay off on the CPU adapter only when rows are few and long (a single row per lane
 * would leave the SIMD lanes of a core idle); GPUs always want a workgroup per row.
 */
export function chooseSoftmaxVariant(gpu: Gpu, layout: SoftmaxLayout): SoftmaxVariant {
  if (gpu.kind !== "cpu") return "gpu-workgroup";
  return layout.rows < 32 && layout.length >= 4096 ? "gpu-workgroup" : "cpu-rows";
}

/** Forward: ~6 FLOPs per element (scale, two exp2 in the online pass, one exp2 and a multiply on write). */
export function softmaxCost(size: number) {
  return { flops: 8 * size, bytes: 12 * size };
}

export function softmaxBackwardCost(size: number) {
  return { flops: 5 * size, bytes: 16 * size };
}

function normaliseAxis(op: string, x: Tensor, axis: number): number {
  if (!Number.isInteger(axis) || axis < -x.rank || axis >= x.rank) {
    throw new OpError(op, `axis ${axis} is out of range for a rank-${x.rank} tensor`, { x });
  }
  return axis < 0 ? axis + x.rank : axis;
}

function validateMask(x: Tensor, axis: number, mask: Tensor): void {
  if (mask.dtype !== "f32") throw new OpError("softmax", `needs an f32 mask, got ${mask.dtype}`, { x, mask });
  if (axis !== x.rank - 1) {
    throw new OpError("softmax", "a mask needs the softmax over the last axis", { x, mask });
  }
  if (x.rank < 2 || mask.rank !== 2 || mask.shape[0] !== x.shape[0] || mask.shape[1] !== x.shape[axis]) {
    throw new OpError("softmax", "mask must be [x.shape[0], length of the softmax axis]", { x, mask });
  }
}

function softmaxParams(layout: SoftmaxLayout, scale: number, mask: Tensor | undefined): Params {
  const rowsPerMaskRow = mask ? layout.rows / mask.shape[0] : 1;
  return new Params()
    .u32(layout.rows, layout.length, layout.stride, rowsPerMaskRow)
    .f32(scale)
    .u32(mask ? 1 : 0);
}

function dispatchShape(variant: SoftmaxVariant, rows: number): [number, number, number] {
  return variant === "cpu-rows" ? grid(rows, 64) : grid(rows, 1);
}

function softmaxBackward(
  y: Tensor,
  gradOutput: Tensor,
  layout: SoftmaxLayout,
  scale: number,
  variant: SoftmaxVariant,
): Tensor {
  const gradInput = Tensor.empty(y.gpu, y.shape);
  launch(
    y.gpu,
    {
      name: "softmaxBackward",
      variant,
      code: variant === "cpu-rows" ? SOFTMAX_BACKWARD_CPU_WGSL : SOFTMAX_BACKWARD_WORKGROUP_WGSL,
    },
    {
      bindings: [y, gradOutput, gradInput],
      params: softmaxParams(layout, scale, undefined),
      workgroups: dispatchShape(variant, layout.rows),
      ...softmaxBackwardCost(y.size),
    },
  );
  return gradInput;
}

/**
 * y = softmax(scale * x) along `axis` (default: the last). With `mask`, masked entries are excluded
 * from the normalisation and come out 0; an entirely masked row is all zeros.
 */
export function softmax(x: Tensor, axis = -1, options: SoftmaxOptions = {}): Tensor {
  if (x.dtype !== "f32") throw new OpError("softmax", `needs f32 input, got ${x.dtype}`, { x });
  const resolvedAxis = normaliseAxis("softmax", x, axis);
  const scale = options.scale ?? 1;
  if (!Number.isFinite(scale)) throw new OpError("softmax", `scale must be finite, got ${scale}`, { x });
  const mask = options.mask;
  if (mask) validateMask(x, resolvedAxis, mask);
  const layout = softmaxLayout(x.shape, resolvedAxis);
  const variant = options.variant ?? chooseSoftmaxVariant(x.gpu, layout);
  const y = Tensor.empty(x.gpu, x.shape);
  launch(
    x.gpu,
    { name: "softmax", variant, code: variant === "cpu-rows" ? SOFTMAX_CPU_WGSL : SOFTMAX_WORKGROUP_WGSL },
    {
      // A mask binding must always be present (pipelines use layout "auto"); x stands in when unused.
      bindings: [x, mask ?? x, y],
      params: softmaxParams(layout, scale, mask),
      workgroups: dispatchShape(variant, layout.rows),
      ...softmaxCost(x.size),
    },
  );
  if (needsGrad(x)) {
    record("softmax", [x], [y], ([gradOutput]) => [softmaxBackward(y, gradOutput!, layout, scale, variant)]);
  }
  return y;
}

/** Float64 CPU reference over the same layout conventions (row-major, any axis, optional mask). */
export const softmaxReference = {
  forward(
    x: Float64Array,
    shape: Shape,
    axis = -1,
    options: { scale?: number; mask?: Float64Array } = {},
  ): Float64Array {
    const resolvedAxis = axis < 0 ? axis + shape.length : axis;
    const { rows, length, stride } = softmaxLayout(shape, resolvedAxis);
    const scale = options.scale ?? 1;
    const rowsPerMaskRow = options.mask ? rows / (options.mask.length / length) : 1;
    const y = new Float64Array(x.length);
    for (let row = 0; row < rows; row++) {
      const base = Math.floor(row / stride) * length * stride + (row % stride);
      const keep = (j: number) => options.mask?.[Math.floor(row / rowsPerMaskRow) * length + j] !== 0;
      let maximum = -Infinity;
      for (let j = 0; j < length; j++) if (keep(j)) maximum = Math.max(maximum, scale * x[base + j * stride]);
      let sum = 0;
      for (let j = 0; j < length; j++) if (keep(j)) sum += Math.exp(scale * x[base + j * stride] - maximum);
      for (let j = 0; j < length; j++) {
        y[base + j * stride] = keep(j) ? Math.exp(scale * x[base + j * stride] - maximum) / sum : 0;
      }
    }
    return y;
  },
  /** Gradient with respect to x given the forward output y. */
  backward(
    y: Float64Array,
    gradOutput: Float64Array,
    shape: Shape,
    axis = -1,
    options: { scale?: number } = {},
  ): Float64Array {
    const resolvedAxis = axis < 0 ? axis + shape.length : axis;
    const { rows, length, stride } = softmaxLayout(shape, resolvedAxis);
    const scale = options.scale ?? 1;
    const gradInput = new Float64Array(y.length);
    for (let row = 0; row < rows; row++) {
      const base = Math.floor(row / stride) * length * stride + (row % stride);
      let weighted = 0;
      for (let j = 0; j < length; j++) weighted += gradOutput[base + j * stride] * y[base + j * stride];
      for (let j = 0; j < length; j++) {
        const index = base + j * stride;
        gradInput[index] = scale * y[index] * (gradOutput[index] - weighted);
      }
    }
    return gradInput;
  },
};
