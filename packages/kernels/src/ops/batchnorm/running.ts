/** Batch norm's running-buffer kernel (every variant; training update and eval statistics). */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/**
 * Training: folds the batch statistics into the running buffers. Eval: turns the running buffers
 * into the stats layout the normalise kernel reads (mean, 1/sqrt(var + eps), var, count).
 */
export const BATCH_NORM_RUNNING_WGSL = `
@group(0) @binding(0) var<storage, read_write> stats: array<f32>;
@group(0) @binding(1) var<storage, read_write> runningMean: array<f32>;
@group(0) @binding(2) var<storage, read_write> runningVar: array<f32>;
struct Params { channels: u32, training: u32, momentum: f32, eps: f32, count: f32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let channel = linearIndex(gid, groups, 64u);
  if (channel >= params.channels) { return; }
  if (params.training == 1u) {
    let count = stats[4u * channel + 3u];
    let unbiased = stats[4u * channel + 2u] * count / (count - 1.0);
    let keep = 1.0 - params.momentum;
    runningMean[channel] = keep * runningMean[channel] + params.momentum * stats[4u * channel];
    runningVar[channel] = keep * runningVar[channel] + params.momentum * unbiased;
  } else {
    stats[4u * channel] = runningMean[channel];
    stats[4u * channel + 1u] = inverseSqrt(runningVar[channel] + params.eps);
    stats[4u * channel + 2u] = runningVar[channel];
    stats[4u * channel + 3u] = params.count;
  }
}`;
