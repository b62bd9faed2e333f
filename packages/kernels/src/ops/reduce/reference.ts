/**
 * The float64 CPU reference of sum, mean, max and sumToShape, over the same layout rules as the
 * kernels (row-major, any axes, keepDims, [1] for a full reduction). Max's backward sends each
 * output's gradient to the first maximum in row-major order. `reduceOpReference` and
 * `sumToShapeOpReference` are the same behind the shared op-reference interface that the
 * table-driven tests use.
 */
import { type Shape, sizeOf } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";
import { broadcastReductionAxes, reductionLayout } from "./layout.ts";

export type ReductionKind = "sum" | "mean" | "max";

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

/** What a reduction call is, for the shared reference interface. */
export interface ReduceParams {
  kind: ReductionKind;
  shape: Shape;
  axes?: number | readonly number[];
  keepDims?: boolean;
}

/** `reduceReference` behind the shared interface: one input (x), its gradient. */
export const reduceOpReference: OpReference<ReduceParams> = {
  forward: ([x], { kind, shape, axes, keepDims }) =>
    reduceReference.forward(kind, x, shape, axes, keepDims ?? false).values,
  backward: ([x], gradOutput, { kind, shape, axes }) => [
    reduceReference.backward(kind, x, shape, gradOutput, axes),
  ],
};

/** What a sumToShape call is: x's shape and the target. */
export interface SumToShapeParams {
  shape: Shape;
  target: Shape;
}

/** `reduceReference.sumToShape` behind the shared interface; its backward broadcasts dy back. */
export const sumToShapeOpReference: OpReference<SumToShapeParams> = {
  forward: ([x], { shape, target }) => reduceReference.sumToShape(x, shape, target),
  backward: ([x], gradOutput, { shape, target }) => [
    reduceReference.backward(
      "sum",
      x,
      shape,
      gradOutput,
      broadcastReductionAxes("sumToShape", shape, target),
    ),
  ],
};
