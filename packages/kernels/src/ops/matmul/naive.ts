/**
 * Variant "naive": one output per invocation, reading both operands straight from their buffers
 * through strides (any transpose, any batch broadcast). The benchmarks' baseline and the CPU
 * adapter's choice for matrix-vector shapes.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";
import { EPILOGUE_WGSL, STRIDED_PARAMS_WGSL } from "./common.ts";

/** One output per invocation: the benchmark reference and the simplest correct kernel. */
export const MATMUL_NAIVE_WGSL = `
${STRIDED_PARAMS_WGSL}
${EPILOGUE_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.batch * params.M * params.N) { return; }
  let column = index % params.N;
  let rowOfAll = index / params.N;
  let row = rowOfAll % params.M;
  let batch = rowOfAll / params.M;
  var aIndex = batch * params.aBatchStride + row * params.aRowStride;
  var bIndex = batch * params.bBatchStride + column * params.bColumnStride;
  var sum = 0.0;
  for (var k = 0u; k < params.K; k++) {
    sum += a[aIndex] * b[bIndex];
    aIndex += params.aDepthStride;
    bIndex += params.bDepthStride;
  }
  storeOutput(index, column, sum);
}`;
