/**
 * Variant "naive": the benchmark baseline, never chosen. One invocation per statistic, scalar loads,
 * three serial passes (mean, variance, normalise).
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/**
 * The naive kernel: one invocation per statistic walks all its rows three times (mean, variance,
 * normalise). Rows of statistic s: s * baseStride + a * outerStride + k, a < outer, k < inner.
 */
export const NAIVE_NORM_WGSL = `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
struct Params { statistics: u32, rowLength: u32, baseStride: u32, outer: u32, outerStride: u32, inner: u32,
                channels: u32, hasGamma: u32, hasBeta: u32, eps: f32 }
@group(0) @binding(5) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
fn rowOf(statistic: u32, a: u32, k: u32) -> u32 {
  return statistic * params.baseStride + a * params.outerStride + k;
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let statistic = linearIndex(gid, groups, 64u);
  if (statistic >= params.statistics) { return; }
  var sum = 0.0;
  for (var a = 0u; a < params.outer; a++) {
    for (var k = 0u; k < params.inner; k++) {
      let start = rowOf(statistic, a, k) * params.rowLength;
      for (var i = 0u; i < params.rowLength; i++) { sum += x[start + i]; }
    }
  }
  let count = f32(params.outer * params.inner * params.rowLength);
  let mean = sum / count;
  var squares = 0.0;
  for (var a = 0u; a < params.outer; a++) {
    for (var k = 0u; k < params.inner; k++) {
      let start = rowOf(statistic, a, k) * params.rowLength;
      for (var i = 0u; i < params.rowLength; i++) {
        let deviation = x[start + i] - mean;
        squares += deviation * deviation;
      }
    }
  }
  let variance = squares / count;
  let rstd = inverseSqrt(variance + params.eps);
  stats[4u * statistic] = mean;
  stats[4u * statistic + 1u] = rstd;
  stats[4u * statistic + 2u] = variance;
  stats[4u * statistic + 3u] = count;
  for (var a = 0u; a < params.outer; a++) {
    for (var k = 0u; k < params.inner; k++) {
      let row = rowOf(statistic, a, k);
      let channel = row % params.channels;
      var scale = rstd;
      var shift = 0.0;
      if (params.hasGamma == 1u) { scale *= gamma[channel]; }
      if (params.hasBeta == 1u) { shift = beta[channel]; }
      let start = row * params.rowLength;
      for (var i = 0u; i < params.rowLength; i++) { y[start + i] = (x[start + i] - mean) * scale + shift; }
    }
  }
}`;
