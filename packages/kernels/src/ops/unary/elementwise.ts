/**
 * The one unary variant ("default"): one invocation per element, forward y = f(x) and backward
 * dx = dy * f'(x), with the function's expression pasted into `{{expression}}` / `{{derivative}}`.
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { UNARY_FUNCTIONS, UNARY_HELPERS_WGSL } from "./functions.ts";
import type { UnaryKind } from "./reference.ts";

const FORWARD_TEMPLATE = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { size: u32, alpha: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${UNARY_HELPERS_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = input[index];
  let alpha = params.alpha;
  output[index] = {{expression}};
}`;

const BACKWARD_TEMPLATE = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32, alpha: f32 }
@group(0) @binding(3) var<uniform> params: Params;
${UNARY_HELPERS_WGSL}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = input[index];
  let alpha = params.alpha;
  gradInput[index] = gradOutput[index] * ({{derivative}});
}`;

/** Each function's forward and backward kernel, built once. */
export const ELEMENTWISE: Readonly<Record<UnaryKind, { forward: string; backward: string }>> =
  Object.fromEntries(
    Object.entries(UNARY_FUNCTIONS).map(([kind, f]) => [
      kind,
      {
        forward: wgsl(FORWARD_TEMPLATE, { expression: f.forward }),
        backward: wgsl(BACKWARD_TEMPLATE, { derivative: f.derivative }),
      },
    ]),
  ) as Record<UnaryKind, { forward: string; backward: string }>;
