/**
 * cast's one variant ("default"): one invocation per element. f32 -> f16 rounds to nearest even and
 * saturates at +-65504; f16 -> f32 is exact.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";
import { HALF_PRELUDE_WGSL } from "../common/half.ts";

export const CAST_TO_HALF_WGSL = `${HALF_PRELUDE_WGSL}
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f16>;
struct Params { size: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  output[index] = toHalf(input[index]);
}`;

export const CAST_TO_FLOAT_WGSL = `enable f16;
@group(0) @binding(0) var<storage, read> input: array<f16>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { size: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  output[index] = f32(input[index]);
}`;
