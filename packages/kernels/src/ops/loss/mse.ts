/**
 * Mean squared error, the one variant ("default") in three shapes of work: `elementwise` squares
 * each difference (reduction "none"); `partials` sums the squares of one contiguous chunk per
 * invocation and `finalize` sums the (at most 4096) chunk partials and scales them ("mean", "sum");
 * `backward` gives 2 (p - t) * scale * dL for either operand (the target's by swapping operands).
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

const MSE_ELEMENTWISE_WGSL = `
@group(0) @binding(0) var<storage, read> prediction: array<f32>;
@group(0) @binding(1) var<storage, read> expected: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
struct Params { size: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  let difference = prediction[index] - expected[index];
  loss[index] = difference * difference;
}`;

const MSE_PARTIALS_WGSL = `
@group(0) @binding(0) var<storage, read> prediction: array<f32>;
@group(0) @binding(1) var<storage, read> expected: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
struct Params { size: u32, chunks: u32, chunkLength: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let chunk = linearIndex(gid, groups, 64u);
  if (chunk >= params.chunks) { return; }
  let begin = chunk * params.chunkLength;
  let end = min(begin + params.chunkLength, params.size);
  var total = 0.0;
  for (var i = begin; i < end; i++) {
    let difference = prediction[i] - expected[i];
    total += difference * difference;
  }
  partials[chunk] = total;
}`;

const MSE_FINALIZE_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
struct Params { chunks: u32, scale: f32 }
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(1)
fn main() {
  var total = 0.0;
  for (var j = 0u; j < params.chunks; j++) { total += partials[j]; }
  loss[0] = total * params.scale;
}`;

/** d/dprediction = 2 (p - t) * scale * dL (elementwise or the scalar dL[0]); d/dtarget is its negative. */
const MSE_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> prediction: array<f32>;
@group(0) @binding(1) var<storage, read> expected: array<f32>;
@group(0) @binding(2) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(3) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32, elementwise: u32, scale: f32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  let upstream = gradOutput[select(0u, index, params.elementwise == 1u)];
  gradInput[index] = 2.0 * (prediction[index] - expected[index]) * params.scale * upstream;
}`;

export const MSE_KERNELS = {
  elementwise: MSE_ELEMENTWISE_WGSL,
  partials: MSE_PARTIALS_WGSL,
  finalize: MSE_FINALIZE_WGSL,
  backward: MSE_BACKWARD_WGSL,
} as const;
