/**
 * Variant "cpu-rows": one invocation per row, no workgroup memory and no barriers (what llvmpipe
 * runs well). Forward: online max and sum in one pass, then the normalised write. Backward:
 * dx = scale * y * (dy - sum(dy * y)).
 */
import { grid, wgsl } from "../../runtime/kernel.ts";
import { HALF_PRELUDE_WGSL } from "../common/half.ts";
import type { SoftmaxKernels } from "./common.ts";
import { SOFTMAX_BACKWARD_BINDINGS_WGSL, SOFTMAX_COMMON_WGSL, softmaxForwardBindings } from "./common.ts";

/**
 * One invocation per row: online max and sum in one pass, then the normalised write. `element` is
 * the storage type of input and output: "f16" (the half-precision variant, half.ts) widens every load
 * to f32 and rounds once at the store; the max, the sum and every exponential stay f32.
 */
export function cpuRowsForward(element: "f32" | "f16"): string {
  const half = element === "f16";
  const load = (index: string) => (half ? `f32(input[${index}])` : `input[${index}]`);
  return wgsl(
    `${half ? HALF_PRELUDE_WGSL : ""}
${softmaxForwardBindings(element)}
${SOFTMAX_COMMON_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  let base = rowBase(row);
  var runningMax = NEG_BIG;
  var runningSum = 0.0;
  for (var j = 0u; j < params.length; j++) {
    if (keeps(row, j)) {
      let x = ${load("base + j * params.stride")} * params.scale;
      let newMax = max(runningMax, x);
      runningSum = runningSum * exp2((runningMax - newMax) * LOG2E) + exp2((x - newMax) * LOG2E);
      runningMax = newMax;
    }
  }
  let inverseSum = select(0.0, 1.0 / runningSum, runningSum > 0.0);
  for (var j = 0u; j < params.length; j++) {
    let index = base + j * params.stride;
    let p = exp2((${load("index")} * params.scale - runningMax) * LOG2E) * inverseSum;
    output[index] = ${half ? "toHalf(select(0.0, p, keeps(row, j)))" : "select(0.0, p, keeps(row, j))"};
  }
}`,
    { paramsBinding: 3 },
  );
}

const FORWARD = cpuRowsForward("f32");

/** dx = scale * y * (dy - sum(dy * y)), one invocation per row. */
const BACKWARD = wgsl(
  `
${SOFTMAX_BACKWARD_BINDINGS_WGSL}
${SOFTMAX_COMMON_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  let base = rowBase(row);
  var weighted = 0.0;
  for (var j = 0u; j < params.length; j++) {
    let index = base + j * params.stride;
    weighted += gradOutput[index] * probabilities[index];
  }
  for (var j = 0u; j < params.length; j++) {
    let index = base + j * params.stride;
    gradInput[index] = params.scale * probabilities[index] * (gradOutput[index] - weighted);
  }
}`,
  { paramsBinding: 3 },
);

export const CPU_ROWS: SoftmaxKernels = {
  forward: FORWARD,
  backward: BACKWARD,
  workgroups: (rows) => grid(rows, 64),
};
