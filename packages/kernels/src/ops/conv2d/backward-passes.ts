/**
 * Passes of conv2d's backward shared by the variants: the sum of the weight gradient's partial
 * chunks, and the bias gradient.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/** Sums `splits` partial results: out[i] = sum_s partial[s * size + i]. */
export const CONV2D_REDUCE_WGSL = `
@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> result: array<f32>;
struct Params { size: u32, splits: u32 }
@group(0) @binding(2) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= p.size) { return; }
  var sum = 0.0;
  for (var s = 0u; s < p.splits; s++) { sum += partial[s * p.size + index]; }
  result[index] = sum;
}`;

/** Bias gradient: one invocation per output channel, summing its N x OH x OW gradients. */
export const CONV2D_BACKWARD_BIAS_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradBias: array<f32>;
struct Params { N: u32, O: u32, pixels: u32 }
@group(0) @binding(2) var<uniform> p: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let o = linearIndex(gid, groups, 64u);
  if (o >= p.O) { return; }
  var sum = 0.0;
  for (var n = 0u; n < p.N; n++) {
    let base = (n * p.O + o) * p.pixels;
    for (var q = 0u; q < p.pixels; q++) { sum += gradOutput[base + q]; }
  }
  gradBias[o] = sum;
}`;
