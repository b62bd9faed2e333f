/** Nearest-neighbour upsampling, one variant ("default"): forward copies, backward gathers each block. */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/** Each output pixel copies the input pixel it falls in. */
const UPSAMPLE_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { size: u32, height: u32, width: u32, factor: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let outWidth = params.width * params.factor;
  let outHeight = params.height * params.factor;
  let x = index % outWidth;
  let y = (index / outWidth) % outHeight;
  let plane = index / (outWidth * outHeight);
  output[index] = input[(plane * params.height + y / params.factor) * params.width + x / params.factor];
}`;

/** Each input pixel gathers the factor x factor block of output gradients it was copied to. */
const UPSAMPLE_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32, height: u32, width: u32, factor: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = index % params.width;
  let y = (index / params.width) % params.height;
  let plane = index / (params.width * params.height);
  let outWidth = params.width * params.factor;
  let outHeight = params.height * params.factor;
  var total = 0.0;
  for (var dy = 0u; dy < params.factor; dy++) {
    let row = (plane * outHeight + y * params.factor + dy) * outWidth + x * params.factor;
    for (var dx = 0u; dx < params.factor; dx++) { total += gradOutput[row + dx]; }
  }
  gradInput[index] = total;
}`;

export const UPSAMPLE = { forward: UPSAMPLE_WGSL, backward: UPSAMPLE_BACKWARD_WGSL } as const;
