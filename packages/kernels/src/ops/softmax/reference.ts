/**
 * The float64 CPU reference of softmax, over the same layout conventions as the kernels (row-major,
 * any axis, optional scale and mask). `forward(x, ...)` gives y; `backward(y, gradOutput, ...)` the
 * gradient with respect to x. `softmaxOpReference` is the same behind the shared op-reference
 * interface that the table-driven tests use.
 */
import type { Shape } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";
import { softmaxLayout } from "./layout.ts";

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

/** What a softmax call is, for the shared reference interface: x's shape, the axis and the options. */
export interface SoftmaxParams {
  shape: Shape;
  axis: number;
  scale?: number;
  /** [shape[0], length] of 1 (keep) / 0 (drop); needs the last axis. */
  mask?: Float64Array;
}

/** `softmaxReference` behind the shared interface: one input (x), its gradient. */
export const softmaxOpReference: OpReference<SoftmaxParams> = {
  forward: ([x], { shape, axis, scale, mask }) => softmaxReference.forward(x, shape, axis, { scale, mask }),
  backward: ([x], gradOutput, { shape, axis, scale, mask }) => [
    softmaxReference.backward(
      softmaxReference.forward(x, shape, axis, { scale, mask }),
      gradOutput,
      shape,
      axis,
      {
        scale,
      },
    ),
  ],
};
