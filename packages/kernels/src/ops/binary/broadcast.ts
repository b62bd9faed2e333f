/**
 * Variant "broadcast": each invocation maps its output index to the two input offsets through
 * per-axis broadcast strides (0 where an input has size 1), up to rank 8 (two vec4s per array).
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import { BINARY_EXPRESSIONS, type BinaryKind } from "./expressions.ts";

const TEMPLATE = `
@group(0) @binding(0) var<storage, read> left: array<f32>;
@group(0) @binding(1) var<storage, read> right: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
struct Params {
  size: u32, rank: u32, pad0: u32, pad1: u32,
  shape: array<vec4<u32>, 2>,
  leftStrides: array<vec4<u32>, 2>,
  rightStrides: array<vec4<u32>, 2>,
}
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  var rest = index;
  var leftOffset = 0u;
  var rightOffset = 0u;
  for (var axis = i32(params.rank) - 1; axis >= 0; axis--) {
    let dim = params.shape[axis / 4][axis % 4];
    let coordinate = rest % dim;
    rest = rest / dim;
    leftOffset += coordinate * params.leftStrides[axis / 4][axis % 4];
    rightOffset += coordinate * params.rightStrides[axis / 4][axis % 4];
  }
  let a = left[leftOffset];
  let b = right[rightOffset];
  output[index] = {{expression}};
}`;

export const BROADCAST: Readonly<Record<BinaryKind, string>> = {
  add: wgsl(TEMPLATE, { expression: BINARY_EXPRESSIONS.add }),
  sub: wgsl(TEMPLATE, { expression: BINARY_EXPRESSIONS.sub }),
  mul: wgsl(TEMPLATE, { expression: BINARY_EXPRESSIONS.mul }),
  div: wgsl(TEMPLATE, { expression: BINARY_EXPRESSIONS.div }),
};
