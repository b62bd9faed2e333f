/** The merge of the chunk partials into per-statistic stats (both split-statistics variants). */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/**
 * Statistic o merges the partials of rows o + a * outerStride (a < outer), every chunk of each:
 * writes mean, 1/sqrt(var + eps), biased var and count.
 */
export const MOMENTS_COMBINE_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
struct Params { statistics: u32, outer: u32, outerStride: u32, chunks: u32, eps: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let o = linearIndex(gid, groups, 64u);
  if (o >= params.statistics) { return; }
  var count = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var a = 0u; a < params.outer; a++) {
    let base = (o + a * params.outerStride) * params.chunks;
    for (var j = 0u; j < params.chunks; j++) {
      let p = 3u * (base + j);
      let partCount = partials[p];
      let merged = count + partCount;
      let delta = partials[p + 1u] - mean;
      mean += delta * (partCount / merged);
      m2 += partials[p + 2u] + delta * delta * (count * partCount / merged);
      count = merged;
    }
  }
  let variance = m2 / count;
  stats[4u * o] = mean;
  stats[4u * o + 1u] = inverseSqrt(variance + params.eps);
  stats[4u * o + 2u] = variance;
  stats[4u * o + 3u] = count;
}`;
