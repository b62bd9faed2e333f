/**
 * Float64 references of add, sub, mul, div with the same broadcasting as the kernels;
 * `binaryOpReference` is the same behind the shared op-reference interface (inputs a, b).
 */
import { type Shape, sizeOf } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";
import type { BinaryKind } from "./expressions.ts";
import { broadcastShapes, broadcastStrides } from "./shapes.ts";

/** Float64 references with the same broadcasting. */
export const binaryReference = {
  forward(kind: BinaryKind, a: Float64Array, aShape: Shape, b: Float64Array, bShape: Shape): Float64Array {
    const outShape = broadcastShapes(kind, aShape, bShape);
    const aStrides = broadcastStrides(aShape, outShape);
    const bStrides = broadcastStrides(bShape, outShape);
    const output = new Float64Array(sizeOf(outShape));
    for (let index = 0; index < output.length; index++) {
      let rest = index;
      let ai = 0;
      let bi = 0;
      for (let axis = outShape.length - 1; axis >= 0; axis--) {
        const coordinate = rest % outShape[axis];
        rest = Math.floor(rest / outShape[axis]);
        ai += coordinate * aStrides[axis];
        bi += coordinate * bStrides[axis];
      }
      const x = a[ai];
      const y = b[bi];
      output[index] = kind === "add" ? x + y : kind === "sub" ? x - y : kind === "mul" ? x * y : x / y;
    }
    return output;
  },
  /** Gradients of sum(gradOutput * (a op b)) with respect to a and b. */
  backward(
    kind: BinaryKind,
    a: Float64Array,
    aShape: Shape,
    b: Float64Array,
    bShape: Shape,
    gradOutput: Float64Array,
  ): [Float64Array, Float64Array] {
    const outShape = broadcastShapes(kind, aShape, bShape);
    const aStrides = broadcastStrides(aShape, outShape);
    const bStrides = broadcastStrides(bShape, outShape);
    const gradA = new Float64Array(a.length);
    const gradB = new Float64Array(b.length);
    for (let index = 0; index < gradOutput.length; index++) {
      let rest = index;
      let ai = 0;
      let bi = 0;
      for (let axis = outShape.length - 1; axis >= 0; axis--) {
        const coordinate = rest % outShape[axis];
        rest = Math.floor(rest / outShape[axis]);
        ai += coordinate * aStrides[axis];
        bi += coordinate * bStrides[axis];
      }
      const g = gradOutput[index];
      const x = a[ai];
      const y = b[bi];
      if (kind === "add") {
        gradA[ai] += g;
        gradB[bi] += g;
      } else if (kind === "sub") {
        gradA[ai] += g;
        gradB[bi] -= g;
      } else if (kind === "mul") {
        gradA[ai] += g * y;
        gradB[bi] += g * x;
      } else {
        gradA[ai] += g / y;
        gradB[bi] -= (g * x) / (y * y);
      }
    }
    return [gradA, gradB];
  },
};

/** What a binary call is: the op and both input shapes. */
export interface BinaryParams {
  kind: BinaryKind;
  aShape: Shape;
  bShape: Shape;
}

export const binaryOpReference: OpReference<BinaryParams> = {
  forward: ([a, b], { kind, aShape, bShape }) => binaryReference.forward(kind, a, aShape, b, bShape),
  backward: ([a, b], gradOutput, { kind, aShape, bShape }) =>
    binaryReference.backward(kind, a, aShape, b, bShape, gradOutput),
};
