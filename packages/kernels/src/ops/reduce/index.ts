/**
 * Reductions: sum, mean and max over any set of axes (with keepDims), their backward passes, and
 * `sumToShape` (the gradient of broadcasting). The op family's layout (as ops/softmax/):
 * - `index.ts` (this file): checks, the passes, the gradients;
 * - `choose.ts`: the chunk length per pass (pure function of adapter kind and shape);
 * - `chunked.ts`: the forward WGSL (sum/mean, max with carried argmax); `backward.ts`: broadcast and
 *   max's scatter; `layout.ts`: axes merged into runs; `reference.ts`: float64; `cost.ts`; `bench.ts`.
 *
 * Every reduction runs as passes over an [outer, length, inner] view of its input: one invocation
 * sums (or takes the max of) a chunk of `length` for one (outer, inner) pair, so a reduction that
 * leaves few outputs is split into chunks and finished by a second, much smaller pass. Reduced axes
 * that are not adjacent are reduced one block at a time, innermost first.
 */
import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, type Shape, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { copyTensor } from "../common/copy.ts";
import { BROADCAST_WGSL, MAX_SCATTER_WGSL } from "./backward.ts";
import { reductionChunkLength } from "./choose.ts";
import { REDUCE_MAX_CARRIED_WGSL, REDUCE_MAX_FIRST_WGSL, REDUCE_SUM_WGSL } from "./chunked.ts";
import { reducePassCost } from "./cost.ts";
import {
  broadcastReductionAxes,
  MAX_MERGED_RANK,
  type ReductionLayout,
  reductionLayout,
  type Segment,
} from "./layout.ts";
import type { ReductionKind } from "./reference.ts";

export { parallelTarget, REDUCE_VARIANTS, type ReduceVariant, reductionChunkLength } from "./choose.ts";
export { reduceCost, reducePassCost } from "./cost.ts";
export {
  broadcastReductionAxes,
  MAX_MERGED_RANK,
  normalizeAxes,
  type ReductionLayout,
  reductionLayout,
  type Segment,
} from "./layout.ts";
export {
  type ReduceParams,
  type ReductionKind,
  reduceOpReference,
  reduceReference,
  type SumToShapeParams,
  sumToShapeOpReference,
} from "./reference.ts";

/** Every WGSL source the reductions compile, exactly as launched (`cxr kernels dump reduce`). */
export const REDUCE_KERNELS = {
  chunked: {
    "sum-mean": REDUCE_SUM_WGSL,
    "max-first": REDUCE_MAX_FIRST_WGSL,
    "max-carried": REDUCE_MAX_CARRIED_WGSL,
    "backward-broadcast": BROADCAST_WGSL,
    "backward-max-scatter": MAX_SCATTER_WGSL,
  },
} as const;

export interface ReduceOptions {
  /** Keep reduced axes as size-1 dimensions (PyTorch's keepdim). Default false. */
  keepDims?: boolean;
}

function assertF32(op: string, operands: Record<string, Tensor>): void {
  for (const [name, tensor] of Object.entries(operands)) {
    if (tensor.dtype !== "f32") throw new OpError(op, `needs f32 ${name}, got ${tensor.dtype}`, operands);
  }
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
      const cost = reducePassCost(outer, length, inner, outputSize);
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
