/**
 * The backward kernels of the reductions: a broadcast (sum, mean, and sumToShape's backward) and
 * max's scatter of each output's gradient to its saved argmax.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/**
 * output[i] = scale * source[broadcast index of i]: the backward of sum and mean, and sumToShape's
 * backward. Dimensions come merged (rank ≤ 8); a zero stride marks a reduced dimension.
 */
export const BROADCAST_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { size: u32, rank: u32, scale: f32, unused: u32, extents: array<vec4<u32>, 2>, strides: array<vec4<u32>, 2> }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  var rest = index;
  var sourceIndex = 0u;
  for (var d = params.rank; d > 0u; d--) {
    let axis = d - 1u;
    let extent = params.extents[axis / 4u][axis % 4u];
    sourceIndex += (rest % extent) * params.strides[axis / 4u][axis % 4u];
    rest = rest / extent;
  }
  output[index] = source[sourceIndex] * params.scale;
}`;

/** Backward of max: gradInput (zeroed first) gets each output's gradient at its argmax. */
export const MAX_SCATTER_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> indices: array<u32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  gradInput[indices[index]] = gradOutput[index];
}`;
