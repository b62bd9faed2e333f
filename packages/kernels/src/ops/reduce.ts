/**
 * Reductions: sum, mean and max over any set of axes (with keepDims), their backward passes,
 * `sumToShape` (the gradient of broadcasting), and the mean/variance "moments" that the
 * normalisation ops (group, batch and layer norm) build on.
 *
 * Every reduction runs as passes over an [outer, length, inner] view of its input: one invocation
 * sums (or takes the max of) a chunk of `length` for one (outer, inner) pair, so a reduction that
 * leaves few outputs is split into chunks and finished by a second, much smaller pass. Reduced axes
 * that are not adjacent are reduced one block at a time, innermost first.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { formatShape, OpError, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export type ReductionKind = "sum" | "mean" | "max";

export interface ReduceOptions {
  /** Keep reduced axes as size-1 dimensions (PyTorch's keepdim). Default false. */
  keepDims?: boolean;
}

/** Axes of rank ≤ 8 after merging neighbours; the broadcast kernel's uniform block holds 8. */
const MAX_MERGED_RANK = 8;

// ---------------------------------------------------------------------------------------------
// WGSL
// ---------------------------------------------------------------------------------------------

/** One pass of sum/mean: output[a, chunk, b] = scale * sum of input[a, r, b] over the chunk's r. */
export const REDUCE_SUM_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { outer: u32, length: u32, inner: u32, chunks: u32, chunkLength: u32, scale: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.outer * params.chunks * params.inner) { return; }
  let b = index % params.inner;
  let rest = index / params.inner;
  let chunk = rest % params.chunks;
  let a = rest / params.chunks;
  let first = chunk * params.chunkLength;
  let last = min(first + params.chunkLength, params.length);
  var offset = (a * params.length + first) * params.inner + b;
  // Two accumulators halve the dependency chain of the adds.
  var even = 0.0;
  var odd = 0.0;
  var r = first;
  for (; r + 1u < last; r += 2u) {
    even += input[offset];
    odd += input[offset + params.inner];
    offset += 2u * params.inner;
  }
  if (r < last) { even += input[offset]; }
  output[index] = (even + odd) * params.scale;
}`;

/**
 * One pass of max with the flat input index of the first maximum (row-major order). The first pass
 * takes indices from positions; later passes carry them from the previous pass's indices.
 */
const REDUCE_MAX_TEMPLATE = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
@group(0) @binding(2) var<storage, read_write> outputIndices: array<u32>;
{{carriedBinding}}
struct Params { outer: u32, length: u32, inner: u32, chunks: u32, chunkLength: u32 }
@group(0) @binding({{paramsBinding}}) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.outer * params.chunks * params.inner) { return; }
  let b = index % params.inner;
  let rest = index / params.inner;
  let chunk = rest % params.chunks;
  let a = rest / params.chunks;
  let first = chunk * params.chunkLength;
  let last = min(first + params.chunkLength, params.length);
  var offset = (a * params.length + first) * params.inner + b;
  var best = input[offset];
  var bestIndex = {{sourceIndex}};
  for (var r = first + 1u; r < last; r++) {
    offset += params.inner;
    let value = input[offset];
    // Strictly greater: ties keep the earlier element, so the first argmax wins.
    if (value > best) {
      best = value;
      bestIndex = {{sourceIndex}};
    }
  }
  output[index] = best;
  outputIndices[index] = bestIndex;
}`;

export const REDUCE_MAX_FIRST_WGSL = wgsl(REDUCE_MAX_TEMPLATE, {
  carriedBinding: "",
  paramsBinding: 3,
  sourceIndex: "offset",
});
export const REDUCE_MAX_CARRIED_WGSL = wgsl(REDUCE_MAX_TEMPLATE, {
  carriedBinding: "@group(0) @binding(3) var<storage, read> inputIndices: array<u32>;",
  paramsBinding: 4,
  sourceIndex: "inputIndices[offset]",
});

/**
 * output[i] = scale * source[broadcast index of i]: the backward of sum and mean, and sumToShape's
 * backward. Dimensions come merged (rank ≤ 8); a zero stride marks a reduced dimension.
 */
export const BROADCAST_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { size: u32, rank: u32, scale: f32, unused: u32, extents: array<vec4<u32>, 2>, strides: array<vec4<u32>, 2> }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  var rest = index;
  var sourceIndex = 0u;
  for (var d = params.rank; d > 0u; d--) {
    let axis = d - 1u;
    let extent = params.extents[axis / 4u][axis % 4u];
    sourceIndex += (rest % extent) * params.strides[axis / 4u][axis % 4u];
    rest = rest / extent;
  }
  output[index] = source[sourceIndex] * params.scale;
}`;

/** Backward of max: gradInput (zeroed first) gets each output's gradient at its argmax. */
export const MAX_SCATTER_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> indices: array<u32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  gradInput[indices[index]] = gradOutput[index];
}`;

// ---------------------------------------------------------------------------------------------
// Layout: which axes are reduced, merged into as few dimensions as possible
// ---------------------------------------------------------------------------------------------

interface Segment {
  extent: number;
  reduced: boolean;
}

export interface ReductionLayout {
  axes: number[];
  outputShape: Shape;
  /** Input dimensions merged into runs of kept or reduced axes; size-1 dimensions dropped. */
  segments: Segment[];
  /** Input elements per output element. */
  count: number;
}

export function normalizeAxes(
  op: string,
  shape: Shape,
  axes: number | readonly number[] | undefined,
): number[] {
  const rank = shape.length;
  const list = axes === undefined ? shape.map((_, axis) => axis) : typeof axes === "number" ? [axes] : axes;
  const seen = new Set<number>();
  for (const axis of list) {
    if (!Number.isInteger(axis) || axis < -rank || axis >= rank) {
      throw new OpError(op, `axis ${axis} is out of range for rank ${rank}`, { x: shape });
    }
    const positive = axis < 0 ? axis + rank : axis;
    if (seen.has(positive)) throw new OpError(op, `axis ${axis} is listed twice`, { x: shape });
    seen.add(positive);
  }
  return [...seen].sort((a, b) => a - b);
}

export function reductionLayout(
  op: string,
  shape: Shape,
  axes: number | readonly number[] | undefined,
  keepDims: boolean,
): ReductionLayout {
  const reducedAxes = normalizeAxes(op, shape, axes);
  const reduced = new Set(reducedAxes);
  const outputShape: number[] = [];
  shape.forEach((extent, axis) => {
    if (!reduced.has(axis)) outputShape.push(extent);
    else if (keepDims) outputShape.push(1);
  });
  // Reducing every axis without keepDims gives [1]: the project's scalar shape (as Tensor.scalar).
  if (outputShape.length === 0) outputShape.push(1);
  const segments: Segment[] = [];
  let count = 1;
  shape.forEach((extent, axis) => {
    const isReduced = reduced.has(axis);
    if (isReduced) count *= extent;
    if (extent === 1) return;
    const last = segments.at(-1);
    if (last && last.reduced === isReduced) last.extent *= extent;
    else segments.push({ extent, reduced: isReduced });
  });
  if (segments.length > MAX_MERGED_RANK) {
    throw new OpError(
      op,
      `axes ${formatShape(reducedAxes)} alternate too often (${segments.length} runs; at most ${MAX_MERGED_RANK})`,
      { x: shape },
    );
  }
  return { axes: reducedAxes, outputShape, segments, count };
}

// ---------------------------------------------------------------------------------------------
// Chunk planning
// ---------------------------------------------------------------------------------------------

/** Invocations that keep every core (lavapipe) or every SM (GPU) busy. */
function parallelTarget(gpu: Gpu): number {
  return gpu.kind === "cpu" ? 4096 : 65536;
}

/** Chunk length along the reduced axis for `outputs` independent reductions of `length` each. */
function reductionChunkLength(gpu: Gpu, outputs: number, length: number): number {
  const minimumChunk = 32;
  const target = parallelTarget(gpu);
  if (outputs >= target || length <= minimumChunk) return length;
  const chunks = Math.min(Math.ceil(target / outputs), Math.ceil(length / minimumChunk));
  return Math.ceil(length / chunks);
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

function assertF32(op: string, operands: Record<string, Tensor>): void {
  for (const [name, tensor] of Object.entries(operands)) {
    if (tensor.dtype !== "f32") throw new OpError(op, `needs f32 ${name}, got ${tensor.dtype}`, operands);
  }
}

/** A copy of `x` with another shape of the same size (a new buffer, so autograd may release it). */
export function copyTensor(x: Tensor, shape: Shape = x.shape): Tensor {
  const copy = Tensor.empty(x.gpu, shape);
  x.gpu.commandEncoder().copyBufferToBuffer(x.buffer, 0, copy.buffer, 0, x.byteLength);
  return copy;
}

interface ReductionResult {
  values: Tensor;
  /** Flat input index of each output's first maximum ("max" only). */
  indices: Tensor | null;
}

/** Runs the passes of a reduction; the result has `outputShape`. */
function runReduction(
  kind: ReductionKind,
  x: Tensor,
  layout: ReductionLayout,
  outputShape: Shape,
): ReductionResult {
  const gpu = x.gpu;
  const segments = layout.segments.map((segment) => ({ ...segment }));
  let current = x;
  let currentIndices: Tensor | null = null;
  const scale = kind === "mean" ? 1 / layout.count : 1;
  const lastReduced = () => segments.findLastIndex((segment) => segment.reduced && segment.extent > 1);
  if (lastReduced() < 0) {
    // Nothing to reduce (only size-1 axes): the values pass through; max's argmax is the element itself.
    return { values: copyTensor(x, outputShape), indices: null };
  }
  for (let k = lastReduced(); k >= 0; k = lastReduced()) {
    const outer = segments.slice(0, k).reduce((product, segment) => product * segment.extent, 1);
    const inner = segments.slice(k + 1).reduce((product, segment) => product * segment.extent, 1);
    let length = segments[k].extent;
    while (length > 1) {
      const chunkLength = reductionChunkLength(gpu, outer * inner, length);
      const chunks = Math.ceil(length / chunkLength);
      const isFinal = chunks === 1 && segments.slice(0, k).every((segment) => !segment.reduced);
      const outputSize = outer * chunks * inner;
      const values = Tensor.empty(gpu, isFinal ? outputShape : [outputSize]);
      const params = new Params().u32(outer, length, inner, chunks, chunkLength);
      const cost = { flops: outer * length * inner, bytes: 4 * (outer * length * inner + outputSize) };
      let indices: Tensor | null = null;
      if (kind === "max") {
        indices = Tensor.empty(gpu, values.shape); // u32 indices in an f32-typed buffer
        const carried = currentIndices !== null;
        launch(
          gpu,
          {
            name: "max",
            variant: carried ? "chunked-carried" : "chunked",
            code: carried ? REDUCE_MAX_CARRIED_WGSL : REDUCE_MAX_FIRST_WGSL,
          },
          {
            bindings: carried ? [current, values, indices, currentIndices!] : [current, values, indices],
            params,
            workgroups: grid(outputSize, 64),
            ...cost,
          },
        );
      } else {
        launch(
          gpu,
          { name: kind, variant: "chunked", code: REDUCE_SUM_WGSL },
          {
            bindings: [current, values],
            params: params.f32(isFinal ? scale : 1),
            workgroups: grid(outputSize, 64),
            ...cost,
          },
        );
      }
      if (current !== x) current.release();
      currentIndices?.release();
      current = values;
      currentIndices = indices;
      length = chunks;
    }
    segments[k].extent = 1;
  }
  return { values: current, indices: currentIndices };
}

/** Strides of the output (kept axes only) over the merged input dimensions; 0 on reduced ones. */
function broadcastStrides(segments: Segment[]): number[] {
  const strides = new Array<number>(segments.length).fill(0);
  let stride = 1;
  for (let index = segments.length - 1; index >= 0; index--) {
    if (segments[index].reduced) continue;
    strides[index] = stride;
    stride *= segments[index].extent;
  }
  return strides;
}

/** Expands `source` (the kept axes of `segments`) to the full input shape, times `scale`. */
function broadcastTo(source: Tensor, segments: Segment[], shape: Shape, scale: number, op: string): Tensor {
  const gpu = source.gpu;
  const output = Tensor.empty(gpu, shape);
  const extents = segments.map((segment) => segment.extent);
  const strides = broadcastStrides(segments);
  const pad = (values: number[]) => [...values, ...new Array(MAX_MERGED_RANK - values.length).fill(1)];
  launch(
    gpu,
    { name: `${op}Backward`, variant: "broadcast", code: BROADCAST_WGSL },
    {
      bindings: [source, output],
      params: new Params()
        .u32(output.size, segments.length)
        .f32(scale)
        .u32(0, ...pad(extents), ...pad(strides)),
      workgroups: grid(output.size, 64),
      flops: output.size,
      bytes: 4 * (output.size + source.size),
    },
  );
  return output;
}

function maxBackward(gradOutput: Tensor, indices: Tensor, shape: Shape): Tensor {
  const gpu = gradOutput.gpu;
  const gradInput = Tensor.zeros(gpu, shape);
  launch(
    gpu,
    { name: "maxBackward", variant: "scatter", code: MAX_SCATTER_WGSL },
    {
      bindings: [gradOutput, indices, gradInput],
      params: new Params().u32(gradOutput.size),
      workgroups: grid(gradOutput.size, 64),
      flops: 0,
      bytes: 4 * (gradInput.size + 2 * gradOutput.size),
    },
  );
  return gradInput;
}

/**
 * Reduces `x` over `axes` (all axes when omitted; negative axes count from the end).
 * "max" sends the gradient to the first maximum in row-major order, like PyTorch's max(dim).
 */
export function reduce(
  kind: ReductionKind,
  x: Tensor,
  axes?: number | readonly number[],
  options: ReduceOptions = {},
): Tensor {
  assertF32(kind, { x });
  const layout = reductionLayout(kind, x.shape, axes, options.keepDims ?? false);
  const { values, indices } = runReduction(kind, x, layout, layout.outputShape);
  if (needsGrad(x)) {
    const inputShape = x.shape;
    record(
      kind,
      [x],
      [values],
      ([gradOutput]) => {
        if (kind === "max" && indices) return [maxBackward(gradOutput!, indices, inputShape)];
        const scale = kind === "mean" ? 1 / layout.count : 1;
        return [broadcastTo(gradOutput!, layout.segments, inputShape, scale, kind)];
      },
      indices ? [indices] : [],
    );
  } else {
    indices?.release();
  }
  return values;
}

export const sum = (x: Tensor, axes?: number | readonly number[], options?: ReduceOptions) =>
  reduce("sum", x, axes, options);
export const mean = (x: Tensor, axes?: number | readonly number[], options?: ReduceOptions) =>
  reduce("mean", x, axes, options);
export const max = (x: Tensor, axes?: number | readonly number[], options?: ReduceOptions) =>
  reduce("max", x, axes, options);

/**
 * Axes of `shape` that broadcasting expanded to reach `target` (numpy rules, right-aligned):
 * leading axes `shape` lacks, and axes where `target` has 1 but `shape` more.
 */
export function broadcastReductionAxes(op: string, shape: Shape, target: Shape): number[] {
  if (target.length > shape.length) {
    throw new OpError(op, "the target shape has more axes than the tensor", { x: shape, shape: target });
  }
  const leading = shape.length - target.length;
  const axes: number[] = [];
  shape.forEach((extent, axis) => {
    if (axis < leading) {
      axes.push(axis);
      return;
    }
    const wanted = target[axis - leading];
    if (wanted === extent) return;
    if (wanted === 1) axes.push(axis);
    else {
      throw new OpError(op, `axis ${axis} has ${extent} elements, which cannot sum to ${wanted}`, {
        x: shape,
        shape: target,
      });
    }
  });
  return axes;
}

/**
 * Sums `x` down to `shape`, undoing numpy-style broadcasting: the gradient of a broadcast operand.
 * Always returns a new tensor (a copy when nothing is reduced), so callers may release the input.
 */
export function sumToShape(x: Tensor, shape: Shape): Tensor {
  assertF32("sumToShape", { x });
  for (const extent of shape) {
    if (!Number.isInteger(extent) || extent < 1) {
      throw new OpError("sumToShape", `invalid target dimension ${extent}`, { x, shape });
    }
  }
  const axes = broadcastReductionAxes("sumToShape", x.shape, shape);
  const layout = reductionLayout("sumToShape", x.shape, axes, true);
  const { values } = runReduction("sum", x, layout, shape);
  if (needsGrad(x)) {
    const inputShape = x.shape;
    record("sumToShape", [x], [values], ([gradOutput]) => [
      broadcastTo(gradOutput!, layout.segments, inputShape, 1, "sumToShape"),
    ]);
  }
  return values;
}

/** FLOPs and bytes of one reduction over `shape` (one pass's worth; later passes are tiny). */
export function reduceCost(shape: Shape, outputSize: number) {
  const size = sizeOf(shape);
  return { flops: size, bytes: 4 * (size + outputSize) };
}

// ---------------------------------------------------------------------------------------------
// Float64 reference
// ---------------------------------------------------------------------------------------------

/** Output flat index of every input element for a reduction layout (row-major). */
function outputIndexOf(shape: Shape, reducedAxes: number[]): Int32Array {
  const reduced = new Set(reducedAxes);
  const size = sizeOf(shape);
  const result = new Int32Array(size);
  const coordinates = new Array<number>(shape.length).fill(0);
  for (let flat = 0; flat < size; flat++) {
    let output = 0;
    for (let axis = 0; axis < shape.length; axis++) {
      if (!reduced.has(axis)) output = output * shape[axis] + coordinates[axis];
    }
    result[flat] = output;
    for (let axis = shape.length - 1; axis >= 0; axis--) {
      if (++coordinates[axis] < shape[axis]) break;
      coordinates[axis] = 0;
    }
  }
  return result;
}

export const reduceReference = {
  forward(
    kind: ReductionKind,
    x: Float64Array,
    shape: Shape,
    axes?: number | readonly number[],
    keepDims = false,
  ): { values: Float64Array; shape: Shape; argmax: Int32Array | null } {
    const layout = reductionLayout(kind, shape, axes, keepDims);
    const outputOf = outputIndexOf(shape, layout.axes);
    const outputSize = sizeOf(layout.outputShape);
    const values = new Float64Array(outputSize).fill(kind === "max" ? Number.NEGATIVE_INFINITY : 0);
    const argmax = kind === "max" ? new Int32Array(outputSize).fill(-1) : null;
    for (let flat = 0; flat < x.length; flat++) {
      const output = outputOf[flat];
      if (argmax) {
        if (argmax[output] < 0 || x[flat] > values[output]) {
          values[output] = x[flat];
          argmax[output] = flat;
        }
      } else {
        values[output] += x[flat];
      }
    }
    if (kind === "mean") for (let index = 0; index < outputSize; index++) values[index] /= layout.count;
    return { values, shape: layout.outputShape, argmax };
  },
  backward(
    kind: ReductionKind,
    x: Float64Array,
    shape: Shape,
    gradOutput: Float64Array,
    axes?: number | readonly number[],
  ): Float64Array {
    const layout = reductionLayout(kind, shape, axes, false);
    const outputOf = outputIndexOf(shape, layout.axes);
    const gradInput = new Float64Array(x.length);
    if (kind === "max") {
      const { argmax } = reduceReference.forward("max", x, shape, axes);
      argmax!.forEach((flat, output) => {
        gradInput[flat] = gradOutput[output];
      });
      return gradInput;
    }
    const scale = kind === "mean" ? 1 / layout.count : 1;
    for (let flat = 0; flat < x.length; flat++) gradInput[flat] = gradOutput[outputOf[flat]] * scale;
    return gradInput;
  },
  sumToShape(x: Float64Array, shape: Shape, target: Shape): Float64Array {
    const axes = broadcastReductionAxes("sumToShape", shape, target);
    return reduceReference.forward("sum", x, shape, axes, true).values;
  },
};

// ---------------------------------------------------------------------------------------------
// Moments: mean and variance of rows, for the normalisation ops
// ---------------------------------------------------------------------------------------------

/**
 * How the per-chunk statistics are computed. "cpu-chunked": each invocation reads one contiguous
 * chunk once (shifted sums, exact re-read when ill-conditioned), no workgroup memory (fast on
 * lavapipe). "gpu-workgroup": 256 invocations read a chunk with coalesced strides and reduce it in
 * workgroup memory, two passes (mean, then squared deviations) over the chunk (fast on GPUs).
 */
export type MomentsVariant = "cpu-chunked" | "gpu-workgroup";

export function chooseMomentsVariant(gpu: Gpu): MomentsVariant {
  return gpu.kind === "cpu" ? "cpu-chunked" : "gpu-workgroup";
}

const VECTOR_TYPES = {
  4: { vector: "vec4<f32>", lanes: 4, horizontalSum: "v.x + v.y + v.z + v.w", pilotLoads: 4 },
  1: { vector: "f32", lanes: 1, horizontalSum: "v", pilotLoads: 16 },
} as const;

/** Elements per load: 4 (vec4) when rows start on 16-byte boundaries, else 1. */
export function lanesFor(rowLength: number): 4 | 1 {
  return rowLength % 4 === 0 ? 4 : 1;
}

/**
 * Per (row, chunk): count, mean and sum of squared deviations (M2) of the chunk, in one read.
 * Sums are taken about a shift K, the mean of the chunk's first 16 values (the "shifted data"
 * algorithm), so a common offset cancels exactly; M2 = Σ(x-K)² - (Σ(x-K))²/n loses bits only when
 * K lies far from the chunk mean, and when that puts more than 1 bit at risk the chunk is re-read
 * and M2 computed about its exact mean (two-pass). Chunks are then merged with Chan et al.'s
 * parallel formula. On lavapipe this one-read form measured ~2x faster than two passes per chunk.
 */
const MOMENTS_CHUNKED_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
struct Params { rows: u32, rowUnits: u32, chunks: u32, chunkUnits: u32 }
@group(0) @binding(2) var<uniform> params: Params;
fn horizontalSum(v: {{vector}}) -> f32 { return {{horizontalSum}}; }
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.rows * params.chunks) { return; }
  let row = index / params.chunks;
  let chunk = index % params.chunks;
  let rowStart = row * params.rowUnits;
  let begin = rowStart + chunk * params.chunkUnits;
  let end = rowStart + min((chunk + 1u) * params.chunkUnits, params.rowUnits);
  // Shift: the mean of the chunk's first 16 values (a pilot estimate of the mean; reread from cache).
  let pilotEnd = min(begin + {{pilotLoads}}u, end);
  var pilot = {{vector}}(0.0);
  for (var i = begin; i < pilotEnd; i++) { pilot += x[i]; }
  let shift = horizontalSum(pilot) / f32((pilotEnd - begin) * {{lanes}}u);
  var sum = {{vector}}(0.0);
  var squares = {{vector}}(0.0);
  // Blocks of 64 loads summed apart, then added: rounding grows with 64 + n/64 terms, not n.
  for (var block = begin; block < end; block += 64u) {
    var blockSum = {{vector}}(0.0);
    var blockSquares = {{vector}}(0.0);
    for (var i = block; i < min(block + 64u, end); i++) {
      let deviation = x[i] - shift;
      blockSum += deviation;
      blockSquares += deviation * deviation;
    }
    sum += blockSum;
    squares += blockSquares;
  }
  let count = f32((end - begin) * {{lanes}}u);
  let shiftedSum = horizontalSum(sum);
  let shiftedSquares = horizontalSum(squares);
  let mean = shift + shiftedSum / count;
  let offsetPart = shiftedSum * shiftedSum / count;
  var m2 = max(shiftedSquares - offsetPart, 0.0);
  if (offsetPart > 0.5 * shiftedSquares) {
    var centered = {{vector}}(0.0);
    for (var i = begin; i < end; i++) {
      let deviation = x[i] - mean;
      centered += deviation * deviation;
    }
    m2 = horizontalSum(centered);
  }
  partials[3u * index] = count;
  partials[3u * index + 1u] = mean;
  partials[3u * index + 2u] = m2;
}`;

const MOMENTS_WORKGROUP_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
struct Params { rows: u32, rowUnits: u32, chunks: u32, chunkUnits: u32 }
@group(0) @binding(2) var<uniform> params: Params;
var<workgroup> scratch: array<f32, 256>;
fn horizontalSum(v: {{vector}}) -> f32 { return {{horizontalSum}}; }
fn workgroupSum(lid: u32, value: f32) -> f32 {
  scratch[lid] = value;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { scratch[lid] += scratch[lid + stride]; }
    workgroupBarrier();
  }
  let result = scratch[0];
  workgroupBarrier();
  return result;
}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let index = wid.x + wid.y * groups.x;
  if (index >= params.rows * params.chunks) { return; }
  let row = index / params.chunks;
  let chunk = index % params.chunks;
  let rowStart = row * params.rowUnits;
  let begin = rowStart + chunk * params.chunkUnits;
  let end = rowStart + min((chunk + 1u) * params.chunkUnits, params.rowUnits);
  var sum = {{vector}}(0.0);
  for (var i = begin + lid; i < end; i += 256u) { sum += x[i]; }
  let count = f32((end - begin) * {{lanes}}u);
  let mean = workgroupSum(lid, horizontalSum(sum)) / count;
  var squares = {{vector}}(0.0);
  for (var i = begin + lid; i < end; i += 256u) {
    let deviation = x[i] - mean;
    squares += deviation * deviation;
  }
  let m2 = workgroupSum(lid, horizontalSum(squares));
  if (lid == 0u) {
    partials[3u * index] = count;
    partials[3u * index + 1u] = mean;
    partials[3u * index + 2u] = m2;
  }
}`;

export const momentsChunkedSource = (lanes: 4 | 1) => wgsl(MOMENTS_CHUNKED_TEMPLATE, VECTOR_TYPES[lanes]);
export const momentsWorkgroupSource = (lanes: 4 | 1) => wgsl(MOMENTS_WORKGROUP_TEMPLATE, VECTOR_TYPES[lanes]);

/**
 * Statistic o merges the partials of rows o + a * outerStride (a < outer), every chunk of each:
 * writes mean, 1/sqrt(var + eps), biased var and count.
 */
export const MOMENTS_COMBINE_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
struct Params { statistics: u32, outer: u32, outerStride: u32, chunks: u32, eps: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let o = linearIndex(gid, groups, 64u);
  if (o >= params.statistics) { return; }
  var count = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var a = 0u; a < params.outer; a++) {
    let base = (o + a * params.outerStride) * params.chunks;
    for (var j = 0u; j < params.chunks; j++) {
      let p = 3u * (base + j);
      let partCount = partials[p];
      let merged = count + partCount;
      let delta = partials[p + 1u] - mean;
      mean += delta * (partCount / merged);
      m2 += partials[p + 2u] + delta * delta * (count * partCount / merged);
      count = merged;
    }
  }
  let variance = m2 / count;
  stats[4u * o] = mean;
  stats[4u * o + 1u] = inverseSqrt(variance + params.eps);
  stats[4u * o + 2u] = variance;
  stats[4u * o + 3u] = count;
}`;

export interface MomentsPlan {
  variant: MomentsVariant;
  lanes: 4 | 1;
  rowUnits: number;
  chunks: number;
  chunkUnits: number;
}

/** Chunking of `rows` rows of `rowLength` elements for the partials pass. */
export function planMoments(rows: number, rowLength: number, variant: MomentsVariant): MomentsPlan {
  const lanes = lanesFor(rowLength);
  const rowUnits = rowLength / lanes;
  let chunks: number;
  if (variant === "cpu-chunked") {
    // Long contiguous runs per invocation are fastest on lavapipe (measured: 128-2560 invocations of
    // one read each); ≤ 1024 loads per chunk keeps the occasional re-read in cache.
    chunks = Math.max(
      Math.ceil(rowUnits / 1024),
      Math.min(Math.ceil(256 / rows), Math.ceil(rowUnits / 64)),
      1,
    );
  } else {
    // Workgroups of 256 invocations, at least 256 loads per workgroup, ~1024 workgroups in flight.
    chunks = Math.max(1, Math.min(Math.ceil(1024 / rows), Math.ceil(rowUnits / 256)));
  }
  const chunkUnits = Math.ceil(rowUnits / chunks);
  return { variant, lanes, rowUnits, chunks: Math.ceil(rowUnits / chunkUnits), chunkUnits };
}

export interface MomentsGrouping {
  /** Number of statistics. */
  statistics: number;
  /** Rows per statistic: statistic o takes rows o + a * outerStride for a < outer. */
  outer: number;
  outerStride: number;
}

/**
 * Mean and variance over groups of rows of `x` (viewed as [rows, rowLength]). Returns a [statistics, 4]
 * tensor: mean, 1/sqrt(var + eps), biased var, count. Group norm: rows are (n, group) spans;
 * batch norm: rows are (n, channel) spans merged over n; layer norm: rows are rows.
 */
export function momentStatistics(
  op: string,
  x: Tensor,
  rows: number,
  rowLength: number,
  grouping: MomentsGrouping,
  eps: number,
  variant: MomentsVariant,
): Tensor {
  const gpu = x.gpu;
  const plan = planMoments(rows, rowLength, variant);
  const partialCount = rows * plan.chunks;
  const partials = Tensor.empty(gpu, [partialCount, 3]);
  const params = new Params().u32(rows, plan.rowUnits, plan.chunks, plan.chunkUnits);
  const cost = { flops: 4 * rows * rowLength, bytes: 4 * rows * rowLength + 12 * partialCount };
  if (variant === "cpu-chunked") {
    launch(
      gpu,
      { name: `${op}Statistics`, variant, code: momentsChunkedSource(plan.lanes) },
      { bindings: [x, partials], params, workgroups: grid(partialCount, 64), ...cost },
    );
  } else {
    launch(
      gpu,
      { name: `${op}Statistics`, variant, code: momentsWorkgroupSource(plan.lanes) },
      { bindings: [x, partials], params, workgroups: grid(partialCount, 1), ...cost },
    );
  }
  const stats = Tensor.empty(gpu, [grouping.statistics, 4]);
  launch(
    gpu,
    { name: `${op}Statistics`, variant: "combine", code: MOMENTS_COMBINE_WGSL },
    {
      bindings: [partials, stats],
      params: new Params()
        .u32(grouping.statistics, grouping.outer, grouping.outerStride, plan.chunks)
        .f32(eps),
      workgroups: grid(grouping.statistics, 64),
      flops: 10 * partialCount,
      bytes: 12 * partialCount + 16 * grouping.statistics,
    },
  );
  partials.release();
  return stats;
}
