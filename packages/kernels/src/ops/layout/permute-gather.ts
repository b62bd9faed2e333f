/** permute's one variant ("default"): each output element gathers its input element through strides. */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/** output[index] = input[sum(coordinate[axis] * inputStride[permutation[axis]])]. */
const PERMUTE_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params {
  size: u32, rank: u32, pad0: u32, pad1: u32,
  outShape: array<vec4<u32>, 2>,
  sourceStrides: array<vec4<u32>, 2>,
}
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  var rest = index;
  var offset = 0u;
  for (var axis = i32(params.rank) - 1; axis >= 0; axis--) {
    let dim = params.outShape[axis / 4][axis % 4];
    offset += (rest % dim) * params.sourceStrides[axis / 4][axis % 4];
    rest = rest / dim;
  }
  output[index] = input[offset];
}`;

export const PERMUTE = PERMUTE_WGSL;
