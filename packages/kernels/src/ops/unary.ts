/**
 * Pointwise activations: ReLU, SiLU, GELU (exact erf form, as Stable Diffusion's GEGLU), sigmoid,
 * tanh, and scaling by a constant. One WGSL template serves all; each function supplies its forward
 * and derivative expressions and its float64 reference.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export type UnaryKind = "relu" | "silu" | "gelu" | "sigmoid" | "tanh" | "scale";

interface UnaryFunction {
  /** WGSL expression of `x` (and `alpha` for scale). */
  forward: string;
  /** WGSL expression of dy/dx in terms of `x`. */
  derivative: string;
  /** FLOPs per element, forward and backward (rough, for the profiler). */
  flops: number;
  reference: (x: number, alpha: number) => number;
  referenceDerivative: (x: number, alpha: number) => number;
}

// erf in WGSL: Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7, below f32 resolution of GELU outputs).
const WGSL_HELPERS = `
fn sigmoidOf(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn erfOf(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-x * x));
}
fn tanhOf(x: f32) -> f32 { let c = clamp(x, -15.0, 15.0); let e = exp(2.0 * c); return (e - 1.0) / (e + 1.0); }
`;

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

export const UNARY_FUNCTIONS: Record<UnaryKind, UnaryFunction> = {
  relu: {
    forward: "max(x, 0.0)",
    derivative: "select(0.0, 1.0, x > 0.0)",
    flops: 1,
    reference: (x) => Math.max(x, 0),
    referenceDerivative: (x) => (x > 0 ? 1 : 0),
  },
  silu: {
    forward: "x * sigmoidOf(x)",
    derivative: "sigmoidOf(x) * (1.0 + x * (1.0 - sigmoidOf(x)))",
    flops: 5,
    reference: (x) => x * sigmoid(x),
    referenceDerivative: (x) => sigmoid(x) * (1 + x * (1 - sigmoid(x))),
  },
  gelu: {
    forward: "0.5 * x * (1.0 + erfOf(x * 0.70710678118654752))",
    derivative: "0.5 * (1.0 + erfOf(x * 0.70710678118654752)) + x * 0.39894228040143268 * exp(-0.5 * x * x)",
    flops: 14,
    reference: (x) => 0.5 * x * (1 + referenceErf(x / Math.SQRT2)),
    referenceDerivative: (x) =>
      0.5 * (1 + referenceErf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI),
  },
  sigmoid: {
    forward: "sigmoidOf(x)",
    derivative: "sigmoidOf(x) * (1.0 - sigmoidOf(x))",
    flops: 4,
    reference: sigmoid,
    referenceDerivative: (x) => sigmoid(x) * (1 - sigmoid(x)),
  },
  tanh: {
    forward: "tanhOf(x)",
    derivative: "1.0 - tanhOf(x) * tanhOf(x)",
    flops: 5,
    reference: Math.tanh,
    referenceDerivative: (x) => 1 - Math.tanh(x) ** 2,
  },
  scale: {
    forward: "alpha * x",
    derivative: "alpha",
    flops: 1,
    reference: (x, alpha) => alpha * x,
    referenceDerivative: (_x, alpha) => alpha,
  },
};

const FORWARD_TEMPLATE = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { size: u32, alpha: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${WGSL_HELPERS}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = input[index];
  let alpha = params.alpha;
  output[index] = {{expression}};
}`;

const BACKWARD_TEMPLATE = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32, alpha: f32 }
@group(0) @binding(3) var<uniform> params: Params;
${WGSL_HELPERS}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = input[index];
  let alpha = params.alpha;
  gradInput[index] = gradOutput[index] * ({{derivative}});
}`;

export const unaryForwardSource = (kind: UnaryKind) =>
  wgsl(FORWARD_TEMPLATE, { expression: UNARY_FUNCTIONS[kind].forward });
export const unaryBackwardSource = (kind: UnaryKind) =>
  wgsl(BACKWARD_TEMPLATE, { derivative: UNARY_FUNCTIONS[kind].derivative });

const forwardSources = new Map<UnaryKind, string>();
const backwardSources = new Map<UnaryKind, string>();

export function unaryCost(kind: UnaryKind, size: number) {
  return { flops: UNARY_FUNCTIONS[kind].flops * size, bytes: 8 * size };
}

function unaryBackward(kind: UnaryKind, x: Tensor, gradOutput: Tensor, alpha: number): Tensor {
  let code = backwardSources.get(kind);
  if (!code) backwardSources.set(kind, (code = unaryBackwardSource(kind)));
  const gradInput = Tensor.empty(x.gpu, x.shape);
  launch(
    x.gpu,
    { name: `${kind}Backward`, code },
    {
      bindings: [x, gradOutput, gradInput],
      params: new Params().u32(x.size).f32(alpha),
      workgroups: grid(x.size, 256),
      flops: (UNARY_FUNCTIONS[kind].flops + 1) * x.size,
      bytes: 12 * x.size,
    },
  );
  return gradInput;
}

/** y = f(x) elementwise. `alpha` is the factor for "scale". */
export function unary(kind: UnaryKind, x: Tensor, alpha = 1): Tensor {
  if (x.dtype !== "f32") throw new OpError(kind, `needs f32 input, got ${x.dtype}`, { x });
  let code = forwardSources.get(kind);
  if (!code) forwardSources.set(kind, (code = unaryForwardSource(kind)));
  const y = Tensor.empty(x.gpu, x.shape);
  launch(
    x.gpu,
    { name: kind, code },
    {
      bindings: [x, y],
      params: new Params().u32(x.size).f32(alpha),
      workgroups: grid(x.size, 256),
      ...unaryCost(kind, x.size),
    },
  );
  if (needsGrad(x)) record(kind, [x], [y], ([gy]) => [unaryBackward(kind, x, gy!, alpha)]);
  return y;
}

export const relu = (x: Tensor) => unary("relu", x);
export const silu = (x: Tensor) => unary("silu", x);
export const gelu = (x: Tensor) => unary("gelu", x);
export const sigmoidOp = (x: Tensor) => unary("sigmoid", x);
export const tanh = (x: Tensor) => unary("tanh", x);
export const scale = (x: Tensor, alpha: number) => unary("scale", x, alpha);

/** Float64 CPU reference: forward and the gradient with respect to x. */
export const unaryReference = {
  forward(kind: UnaryKind, x: Float64Array, alpha = 1): Float64Array {
    return x.map((value) => UNARY_FUNCTIONS[kind].reference(value, alpha));
  },
  backward(kind: UnaryKind, x: Float64Array, gradOutput: Float64Array, alpha = 1): Float64Array {
    return x.map(
      (value, index) => gradOutput[index] * UNARY_FUNCTIONS[kind].referenceDerivative(value, alpha),
    );
  },
};
