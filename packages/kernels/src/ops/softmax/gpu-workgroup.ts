/**
 * Variant "gpu-workgroup": one workgroup per row; each thread reduces a strided slice, then every
 * thread merges the partials after a single barrier (GPUs, and few long rows on the CPU adapter).
 */
import { grid, wgsl } from "../../runtime/kernel.ts";
import type { SoftmaxKernels } from "./common.ts";
import {
  SOFTMAX_BACKWARD_BINDINGS_WGSL,
  SOFTMAX_COMMON_WGSL,
  SOFTMAX_FORWARD_BINDINGS_WGSL,
  WORKGROUP_ROW_THREADS,
} from "./common.ts";

/** One workgroup per row: each thread reduces a strided slice, then every thread merges the partial (max, sum) pairs. */
const FORWARD = wgsl(
  `
${SOFTMAX_FORWARD_BINDINGS_WGSL}
${SOFTMAX_COMMON_WGSL}
const THREADS: u32 = {{threads}}u;
var<workgroup> partialMax: array<f32, THREADS>;
var<workgroup> partialSum: array<f32, THREADS>;
@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  // Every thread of a row's workgroup reaches each barrier; rows past the end just compute nothing.
  let unclampedRow = wid.x + wid.y * groups.x;
  let rowInRange = unclampedRow < params.rows;
  let row = min(unclampedRow, params.rows - 1u);
  let base = rowBase(row);
  var runningMax = NEG_BIG;
  var runningSum = 0.0;
  for (var j = lane; j < params.length; j += THREADS) {
    if (keeps(row, j)) {
      let x = input[base + j * params.stride] * params.scale;
      let newMax = max(runningMax, x);
      runningSum = runningSum * exp2((runningMax - newMax) * LOG2E) + exp2((x - newMax) * LOG2E);
      runningMax = newMax;
    }
  }
  partialMax[lane] = runningMax;
  partialSum[lane] = runningSum;
  workgroupBarrier();
  // Every thread merges all partials itself: one barrier instead of a tree of them (a barrier inside a
  // loop costs llvmpipe seconds of compile time), and the reads are broadcasts, free of bank conflicts.
  var rowMax = NEG_BIG;
  for (var t = 0u; t < THREADS; t++) { rowMax = max(rowMax, partialMax[t]); }
  var rowSum = 0.0;
  for (var t = 0u; t < THREADS; t++) { rowSum += partialSum[t] * exp2((partialMax[t] - rowMax) * LOG2E); }
  let inverseSum = select(0.0, 1.0 / rowSum, rowSum > 0.0);
  if (!rowInRange) { return; }
  for (var j = lane; j < params.length; j += THREADS) {
    let index = base + j * params.stride;
    let p = exp2((input[index] * params.scale - rowMax) * LOG2E) * inverseSum;
    output[index] = select(0.0, p, keeps(row, j));
  }
}`,
  { paramsBinding: 3, threads: WORKGROUP_ROW_THREADS },
);

/** The same backward with one workgroup per row: strided partial dot products, merged after one barrier. */
const BACKWARD = wgsl(
  `
${SOFTMAX_BACKWARD_BINDINGS_WGSL}
${SOFTMAX_COMMON_WGSL}
const THREADS: u32 = {{threads}}u;
var<workgroup> partialDot: array<f32, THREADS>;
@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
  let unclampedRow = wid.x + wid.y * groups.x;
  let rowInRange = unclampedRow < params.rows;
  let row = min(unclampedRow, params.rows - 1u);
  let base = rowBase(row);
  var weighted = 0.0;
  for (var j = lane; j < params.length; j += THREADS) {
    let index = base + j * params.stride;
    weighted += gradOutput[index] * probabilities[index];
  }
  partialDot[lane] = weighted;
  workgroupBarrier();
  var rowDot = 0.0;
  for (var t = 0u; t < THREADS; t++) { rowDot += partialDot[t]; }
  if (!rowInRange) { return; }
  for (var j = lane; j < params.length; j += THREADS) {
    let index = base + j * params.stride;
    gradInput[index] = params.scale * probabilities[index] * (gradOutput[index] - rowDot);
  }
}`,
  { paramsBinding: 3, threads: WORKGROUP_ROW_THREADS },
);

export const GPU_WORKGROUP: SoftmaxKernels = {
  forward: FORWARD,
  backward: BACKWARD,
  workgroups: (rows) => grid(rows, 1),
};
