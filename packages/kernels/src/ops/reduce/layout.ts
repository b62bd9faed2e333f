/**
 * How a reduction sees its input: the reduced axes (negative ones resolved, each once), the output
 * shape, and the input's dimensions merged into runs of kept or reduced axes (size-1 axes dropped).
 * Every pass then works on an [outer, length, inner] view of one reduced run.
 */
import { formatShape, OpError, type Shape } from "../../runtime/tensor.ts";

/** Axes of rank ≤ 8 after merging neighbours; the broadcast kernel's uniform block holds 8. */
export const MAX_MERGED_RANK = 8;

export interface Segment {
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
