/** The slice copy behind concat (into the whole tensor) and split (out of it), one variant ("default"). */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/**
 * Copies a [outer, sourceAxis, inner] block into (or out of) a [outer, targetAxis, inner] tensor
 * at `offset` along the middle axis. `direction` 0 writes into the big tensor, 1 reads from it.
 */
const SLICE_COPY_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var<storage, read_write> destination: array<f32>;
struct Params { size: u32, inner: u32, sliceAxis: u32, wholeAxis: u32, offset: u32, intoWhole: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let innerIndex = index % params.inner;
  let sliceIndex = (index / params.inner) % params.sliceAxis;
  let outerIndex = index / (params.inner * params.sliceAxis);
  let wholeIndex = (outerIndex * params.wholeAxis + params.offset + sliceIndex) * params.inner + innerIndex;
  if (params.intoWhole == 1u) {
    destination[wholeIndex] = source[index];
  } else {
    destination[index] = source[wholeIndex];
  }
}`;

export const SLICE_COPY = SLICE_COPY_WGSL;
