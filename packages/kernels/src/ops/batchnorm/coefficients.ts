/**
 * Batch norm's own backward kernel in training mode (every variant): per channel, the terms of dx
 * from the gamma/beta gradients. The other kernels batch norm runs live in ../norm-core/.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/** Training-mode terms of dx per channel: k1 = gamma * Σdy / n, k2 = gamma * Σ(dy * x̂) / n. */
export const BATCH_NORM_COEFFICIENTS_WGSL = `
@group(0) @binding(0) var<storage, read> gradGamma: array<f32>;
@group(0) @binding(1) var<storage, read> gradBeta: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> coefficients: array<f32>;
struct Params { channels: u32 }
@group(0) @binding(5) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let channel = linearIndex(gid, groups, 64u);
  if (channel >= params.channels) { return; }
  let scale = gamma[channel] / stats[4u * channel + 3u];
  coefficients[2u * channel] = scale * gradBeta[channel];
  coefficients[2u * channel + 1u] = scale * gradGamma[channel];
}`;
