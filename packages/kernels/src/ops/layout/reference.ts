/**
 * Float64 references of the layout ops, and the same behind the shared op-reference interface
 * (`concatOpReference`, `permuteOpReference`, `upsampleOpReference`).
 */
import { type Shape, sizeOf } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";

/** Float64 references. */
export const layoutReference = {
  concat(inputs: Float64Array[], shapes: Shape[], axis: number): Float64Array {
    const inner = sizeOf(shapes[0].slice(axis + 1));
    const outer = sizeOf(shapes[0].slice(0, axis));
    const parts: number[] = [];
    for (let o = 0; o < outer; o++) {
      inputs.forEach((input, index) => {
        const block = shapes[index][axis] * inner;
        for (let k = 0; k < block; k++) parts.push(input[o * block + k]);
      });
    }
    return Float64Array.from(parts);
  },
  permute(x: Float64Array, shape: Shape, permutation: number[]): Float64Array {
    const rank = shape.length;
    const strides = new Array<number>(rank);
    let stride = 1;
    for (let axis = rank - 1; axis >= 0; axis--) {
      strides[axis] = stride;
      stride *= shape[axis];
    }
    const outShape = permutation.map((axis) => shape[axis]);
    const output = new Float64Array(x.length);
    for (let index = 0; index < x.length; index++) {
      let rest = index;
      let offset = 0;
      for (let axis = rank - 1; axis >= 0; axis--) {
        offset += (rest % outShape[axis]) * strides[permutation[axis]];
        rest = Math.floor(rest / outShape[axis]);
      }
      output[index] = x[offset];
    }
    return output;
  },
  upsampleNearest(x: Float64Array, shape: Shape, factor: number): Float64Array {
    const [n, c, h, w] = shape;
    const output = new Float64Array(n * c * h * factor * w * factor);
    let index = 0;
    for (let plane = 0; plane < n * c; plane++) {
      for (let y = 0; y < h * factor; y++) {
        for (let xx = 0; xx < w * factor; xx++) {
          output[index++] = x[(plane * h + Math.floor(y / factor)) * w + Math.floor(xx / factor)];
        }
      }
    }
    return output;
  },
  upsampleNearestBackward(gradOutput: Float64Array, shape: Shape, factor: number): Float64Array {
    const [n, c, h, w] = shape;
    const grad = new Float64Array(n * c * h * w);
    let index = 0;
    for (let plane = 0; plane < n * c; plane++) {
      for (let y = 0; y < h * factor; y++) {
        for (let xx = 0; xx < w * factor; xx++) {
          grad[(plane * h + Math.floor(y / factor)) * w + Math.floor(xx / factor)] += gradOutput[index++];
        }
      }
    }
    return grad;
  },
};

/** What a concat call is: the inputs' shapes and the (resolved) axis. */
export interface ConcatParams {
  shapes: Shape[];
  axis: number;
}

/** The gradient of each input is its own slice of the output gradient. */
export const concatOpReference: OpReference<ConcatParams> = {
  forward: (inputs, { shapes, axis }) => layoutReference.concat([...inputs], shapes, axis),
  backward: (_inputs, gradOutput, { shapes, axis }) => {
    const inner = sizeOf(shapes[0].slice(axis + 1));
    const outer = sizeOf(shapes[0].slice(0, axis));
    const total = shapes.reduce((sum, shape) => sum + shape[axis], 0) * inner;
    let start = 0;
    return shapes.map((shape) => {
      const block = shape[axis] * inner;
      const grad = new Float64Array(outer * block);
      for (let o = 0; o < outer; o++)
        grad.set(gradOutput.subarray(o * total + start, o * total + start + block), o * block);
      start += block;
      return grad;
    });
  },
};

export interface PermuteParams {
  shape: Shape;
  permutation: number[];
}

/** The gradient is the output gradient permuted back. */
export const permuteOpReference: OpReference<PermuteParams> = {
  forward: ([x], { shape, permutation }) => layoutReference.permute(x, shape, permutation),
  backward: (_inputs, gradOutput, { shape, permutation }) => {
    const inverse = permutation.map((_, index) => permutation.indexOf(index));
    return [
      layoutReference.permute(
        gradOutput,
        permutation.map((axis) => shape[axis]),
        inverse,
      ),
    ];
  },
};

export interface UpsampleParams {
  shape: Shape;
  factor: number;
}

export const upsampleOpReference: OpReference<UpsampleParams> = {
  forward: ([x], { shape, factor }) => layoutReference.upsampleNearest(x, shape, factor),
  backward: (_inputs, gradOutput, { shape, factor }) => [
    layoutReference.upsampleNearestBackward(gradOutput, shape, factor),
  ],
};
