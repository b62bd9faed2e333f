/**
 * The activations as WGSL: each function's forward and derivative expression of `x` (and `alpha`),
 * its FLOPs, and its float64 reference (from reference.ts). The elementwise kernels (elementwise.ts)
 * and matmul's fused epilogue paste these expressions in.
 */
import { UNARY_REFERENCES, type UnaryKind } from "./reference.ts";

export interface UnaryFunction {
  /** WGSL expression of `x` (and `alpha` for scale). */
  forward: string;
  /** WGSL expression of dy/dx in terms of `x`. */
  derivative: string;
  /** FLOPs per element, forward and backward (rough, for the profiler). */
  flops: number;
  reference: (x: number, alpha: number) => number;
  referenceDerivative: (x: number, alpha: number) => number;
}

/** The helpers the expressions call. erf: Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7, below f32 resolution of GELU outputs). */
export const UNARY_HELPERS_WGSL = `
fn sigmoidOf(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn erfOf(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-x * x));
}
fn tanhOf(x: f32) -> f32 { let c = clamp(x, -15.0, 15.0); let e = exp(2.0 * c); return (e - 1.0) / (e + 1.0); }
`;

const EXPRESSIONS: Record<UnaryKind, Pick<UnaryFunction, "forward" | "derivative" | "flops">> = {
  relu: { forward: "max(x, 0.0)", derivative: "select(0.0, 1.0, x > 0.0)", flops: 1 },
  silu: {
    forward: "x * sigmoidOf(x)",
    derivative: "sigmoidOf(x) * (1.0 + x * (1.0 - sigmoidOf(x)))",
    flops: 5,
  },
  gelu: {
    forward: "0.5 * x * (1.0 + erfOf(x * 0.70710678118654752))",
    derivative: "0.5 * (1.0 + erfOf(x * 0.70710678118654752)) + x * 0.39894228040143268 * exp(-0.5 * x * x)",
    flops: 14,
  },
  sigmoid: { forward: "sigmoidOf(x)", derivative: "sigmoidOf(x) * (1.0 - sigmoidOf(x))", flops: 4 },
  tanh: { forward: "tanhOf(x)", derivative: "1.0 - tanhOf(x) * tanhOf(x)", flops: 5 },
  scale: { forward: "alpha * x", derivative: "alpha", flops: 1 },
};

export const UNARY_FUNCTIONS: Record<UnaryKind, UnaryFunction> = Object.fromEntries(
  (Object.keys(EXPRESSIONS) as UnaryKind[]).map((kind) => [
    kind,
    {
      ...EXPRESSIONS[kind],
      reference: UNARY_REFERENCES[kind].value,
      referenceDerivative: UNARY_REFERENCES[kind].derivative,
    },
  ]),
) as Record<UnaryKind, UnaryFunction>;

export const UNARY_KINDS = Object.keys(EXPRESSIONS) as readonly UnaryKind[];
