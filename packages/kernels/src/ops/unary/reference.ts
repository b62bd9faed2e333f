/**
 * Float64 references of the pointwise activations: each function's value and derivative, the erf they
 * need, and `unaryOpReference` behind the shared op-reference interface.
 */
import type { OpReference } from "../common/reference.ts";

export type UnaryKind = "relu" | "silu" | "gelu" | "sigmoid" | "tanh" | "scale";

/** erf to ~1e-14: Taylor series for |x| < 3, continued fraction for erfc beyond. */
export function referenceErf(x: number): number {
  const z = Math.abs(x);
  if (z < 3) {
    let term = z;
    let sum = z;
    for (let n = 1; n < 200 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
      term *= (-z * z) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...)))), evaluated bottom-up.
  let fraction = z;
  for (let k = 60; k >= 1; k--) fraction = z + k / 2 / fraction;
  const erfc = Math.exp(-z * z) / Math.sqrt(Math.PI) / fraction;
  return Math.sign(x) * (1 - erfc);
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** Each function's value and derivative in float64; `alpha` is the factor of "scale". */
export const UNARY_REFERENCES: Record<
  UnaryKind,
  { value: (x: number, alpha: number) => number; derivative: (x: number, alpha: number) => number }
> = {
  relu: { value: (x) => Math.max(x, 0), derivative: (x) => (x > 0 ? 1 : 0) },
  silu: { value: (x) => x * sigmoid(x), derivative: (x) => sigmoid(x) * (1 + x * (1 - sigmoid(x))) },
  gelu: {
    value: (x) => 0.5 * x * (1 + referenceErf(x / Math.SQRT2)),
    derivative: (x) =>
      0.5 * (1 + referenceErf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI),
  },
  sigmoid: { value: sigmoid, derivative: (x) => sigmoid(x) * (1 - sigmoid(x)) },
  tanh: { value: Math.tanh, derivative: (x) => 1 - Math.tanh(x) ** 2 },
  scale: { value: (x, alpha) => alpha * x, derivative: (_x, alpha) => alpha },
};

/** Float64 CPU reference: forward and the gradient with respect to x. */
export const unaryReference = {
  forward(kind: UnaryKind, x: Float64Array, alpha = 1): Float64Array {
    return x.map((value) => UNARY_REFERENCES[kind].value(value, alpha));
  },
  backward(kind: UnaryKind, x: Float64Array, gradOutput: Float64Array, alpha = 1): Float64Array {
    return x.map((value, index) => gradOutput[index] * UNARY_REFERENCES[kind].derivative(value, alpha));
  },
};

/** What a unary call is: the function and its factor (scale only). */
export interface UnaryParams {
  kind: UnaryKind;
  alpha?: number;
}

export const unaryOpReference: OpReference<UnaryParams> = {
  forward: ([x], { kind, alpha }) => unaryReference.forward(kind, x, alpha),
  backward: ([x], gradOutput, { kind, alpha }) => [unaryReference.backward(kind, x, gradOutput, alpha)],
};
