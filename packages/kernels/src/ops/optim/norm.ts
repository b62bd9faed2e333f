/** The gradient-norm reduction of clipGradNorm (the same in both elementwise variants). */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/**
 * Sum (of squares, at the first level) of strided elements into one partial per invocation; levels
 * repeat until one value is left, which the last level turns into its square root.
 */
const SUM_OF_SQUARES_WGSL = `
@group(0) @binding(0) var<storage, read> values: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
struct Params { size: u32, partialCount: u32, partialOffset: u32, square: u32, takeRoot: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.partialCount) { return; }
  var total = 0.0;
  for (var element = index; element < params.size; element += params.partialCount) {
    let value = values[element];
    total += select(value, value * value, params.square == 1u);
  }
  partials[params.partialOffset + index] = select(total, sqrt(total), params.takeRoot == 1u);
}`;

export const NORM_SUM = SUM_OF_SQUARES_WGSL;
