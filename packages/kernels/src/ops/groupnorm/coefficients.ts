/**
 * Group norm's own backward kernel (every variant): per (n, group), the terms of dx from the
 * channel-row sums of the norm core. The other kernels group norm runs live in ../norm-core/.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/** Group norm's per-(n, group) terms: k1 = mean of gamma * dy, k2 = mean of gamma * dy * x̂. */
export const GROUP_NORM_COEFFICIENTS_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> coefficients: array<f32>;
struct Params { statistics: u32, groups: u32, channelsPerGroup: u32, channels: u32, chunks: u32, hasGamma: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let statistic = linearIndex(gid, groups, 64u);
  if (statistic >= params.statistics) { return; }
  let n = statistic / params.groups;
  let group = statistic % params.groups;
  var sumGrad = 0.0;
  var sumGradNormalized = 0.0;
  for (var k = 0u; k < params.channelsPerGroup; k++) {
    let channel = group * params.channelsPerGroup + k;
    var weight = 1.0;
    if (params.hasGamma == 1u) { weight = gamma[channel]; }
    let base = (n * params.channels + channel) * params.chunks;
    var channelGrad = 0.0;
    var channelGradNormalized = 0.0;
    for (var j = 0u; j < params.chunks; j++) {
      channelGrad += partials[2u * (base + j)];
      channelGradNormalized += partials[2u * (base + j) + 1u];
    }
    sumGrad += weight * channelGrad;
    sumGradNormalized += weight * channelGradNormalized;
  }
  let count = stats[4u * statistic + 3u];
  coefficients[2u * statistic] = sumGrad / count;
  coefficients[2u * statistic + 1u] = sumGradNormalized / count;
}`;
