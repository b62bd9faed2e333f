/**
 * The two extra passes of matmul's backward, shared by every variant: the activation's derivative
 * applied to gradOutput, and a sum over rows (the bias gradient and the gradient of an operand that
 * is broadcast over the batch). The products of the backward run on the variant's own kernel.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";
import { ACTIVATION_WGSL } from "./common.ts";

/** gradZ = gradOutput * activation'(z); for ReLU, z may be the output itself (same sign). */
export const MATMUL_ACTIVATION_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> preActivation: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradPreActivation: array<f32>;
struct Params { size: u32, activation: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${ACTIVATION_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  gradPreActivation[index] = gradOutput[index] * activationDerivative(preActivation[index], params.activation);
}`;

/** output[j] = sum over r of input[r * size + j]: the bias gradient and gradients of broadcast operands. */
export const MATMUL_SUM_ROWS_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { rows: u32, size: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  var sum = 0.0;
  for (var row = 0u; row < params.rows; row++) { sum += input[row * params.size + index]; }
  output[index] = sum;
}`;
