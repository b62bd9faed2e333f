/** Variant "flat": both inputs have the output's shape, so every invocation reads index i of each. */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { BINARY_EXPRESSIONS, type BinaryKind } from "./expressions.ts";

const TEMPLATE = `
@group(0) @binding(0) var<storage, read> left: array<f32>;
@group(0) @binding(1) var<storage, read> right: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
struct Params { size: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let a = left[index];
  let b = right[index];
  output[index] = {{expression}};
}`;

export const FLAT: Readonly<Record<BinaryKind, string>> = {
  add: wgsl(TEMPLATE, { expression: BINARY_EXPRESSIONS.add }),
  sub: wgsl(TEMPLATE, { expression: BINARY_EXPRESSIONS.sub }),
  mul: wgsl(TEMPLATE, { expression: BINARY_EXPRESSIONS.mul }),
  div: wgsl(TEMPLATE, { expression: BINARY_EXPRESSIONS.div }),
};
