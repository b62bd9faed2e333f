/** How a softmax over one axis of a row-major tensor splits into rows. */
import type { Shape } from "../../runtime/tensor.ts";

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
