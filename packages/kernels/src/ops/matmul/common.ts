/**
 * WGSL shared by the matmul kernels: the activation functions, the fused epilogue (bias, activation,
 * optional pre-activation store, bindings 2..5) and the strided operand parameters of the buffer
 * kernels. The variant files paste these in; `cxr kernels dump matmul` prints the result.
 */

export type MatmulActivation = "none" | "relu" | "silu" | "gelu";
export const MATMUL_ACTIVATIONS: readonly MatmulActivation[] = ["none", "relu", "silu", "gelu"];

/** The epilogue's `activation` uniform. */
export const ACTIVATION_CODES: Record<MatmulActivation, number> = { none: 0, relu: 1, silu: 2, gelu: 3 };

/** Activation functions shared by the epilogue and the activation backward (erf: Abramowitz-Stegun 7.1.26). */
export const ACTIVATION_WGSL = `
fn sigmoidOf(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn erfOf(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-x * x));
}
fn activate(x: f32, activation: u32) -> f32 {
  switch activation {
    case 1u: { return max(x, 0.0); }
    case 2u: { return x * sigmoidOf(x); }
    case 3u: { return 0.5 * x * (1.0 + erfOf(x * 0.70710678118654752)); }
    default: { return x; }
  }
}
fn activationDerivative(x: f32, activation: u32) -> f32 {
  switch activation {
    case 1u: { return select(0.0, 1.0, x > 0.0); }
    case 2u: { let s = sigmoidOf(x); return s * (1.0 + x * (1.0 - s)); }
    case 3u: { return 0.5 * (1.0 + erfOf(x * 0.70710678118654752)) + x * 0.39894228040143268 * exp(-0.5 * x * x); }
    default: { return 1.0; }
  }
}`;

/**
 * Bindings 2..5 and the output step, identical in every matmul kernel. Each kernel's Params struct
 * starts with the four epilogue fields N, hasBias, activation, storePreActivation.
 */
export const EPILOGUE_WGSL = `
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
@group(0) @binding(4) var<storage, read_write> preActivation: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;
${ACTIVATION_WGSL}
// One output element: add the bias, keep the pre-activation when backward needs it, activate.
fn storeOutput(index: u32, biasIndex: u32, sum: f32) {
  var value = sum;
  if (params.hasBias != 0u) { value += bias[biasIndex]; }
  if (params.storePreActivation != 0u) { preActivation[index] = value; }
  output[index] = activate(value, params.activation);
}`;

/** Where each operand element lives: offset = batch * batchStride + outer * outerStride + k * depthStride. */
export const STRIDED_PARAMS_WGSL = `
struct Params {
  N: u32, hasBias: u32, activation: u32, storePreActivation: u32,
  batch: u32, M: u32, K: u32,
  aBatchStride: u32, aRowStride: u32, aDepthStride: u32,
  bBatchStride: u32, bColumnStride: u32, bDepthStride: u32,
}
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;`;

/** One variant's kernels, exactly as launched, by pass (what `cxr kernels dump matmul` prints). */
export type MatmulKernels = Readonly<Record<string, string>>;

/**
 * The CPU variants' product kernels (cpu-register-blocked, cpu-subgroup): Params as `dispatchCpu`
 * fills them, the two packed operand textures and the epilogue.
 */
export const PACKED_PRODUCT_HEADER_WGSL = `
struct Params {
  N: u32, hasBias: u32, activation: u32, storePreActivation: u32,
  batch: u32, rows: u32, columns: u32, depthTexels: u32, rowGroups: u32, columnBlocks: u32,
  aBatchRows: u32, bBatchRows: u32, layerShift: u32,
  outputBatchStride: u32, outputRowStride: u32, outputColumnStride: u32, swapped: u32,
}
@group(0) @binding(0) var packedA: texture_2d_array<f32>;
@group(0) @binding(1) var packedB: texture_2d_array<f32>;
${EPILOGUE_WGSL}`;
