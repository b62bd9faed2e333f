/**
 * The f16 variant of add, sub, mul, div (inference only): NumPy broadcasting through per-axis
 * strides as in broadcast.ts (equal shapes are the case where every stride is the natural one),
 * operands widened to f32, one rounding at the store.
 */
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../../runtime/kernel.ts";
import { sizeOf, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkHalfOperands, HALF_PRELUDE_WGSL } from "../common/half.ts";
import { BINARY_EXPRESSIONS, type BinaryKind } from "./expressions.ts";
import { broadcastShapes, broadcastStrides, MAX_BINARY_RANK } from "./shapes.ts";

const HALF_TEMPLATE = `${HALF_PRELUDE_WGSL}
@group(0) @binding(0) var<storage, read> left: array<f16>;
@group(0) @binding(1) var<storage, read> right: array<f16>;
@group(0) @binding(2) var<storage, read_write> output: array<f16>;
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
  let a = f32(left[leftOffset]);
  let b = f32(right[rightOffset]);
  output[index] = toHalf({{expression}});
}`;

/** The f16 kernels by op (`cxr kernels dump binary --variant f16`). */
export const BINARY_HALF_KERNELS: Readonly<Record<BinaryKind, string>> = {
  add: wgsl(HALF_TEMPLATE, { expression: BINARY_EXPRESSIONS.add }),
  sub: wgsl(HALF_TEMPLATE, { expression: BINARY_EXPRESSIONS.sub }),
  mul: wgsl(HALF_TEMPLATE, { expression: BINARY_EXPRESSIONS.mul }),
  div: wgsl(HALF_TEMPLATE, { expression: BINARY_EXPRESSIONS.div }),
};

const padded = (values: number[]) => [...values, ...new Array(MAX_BINARY_RANK - values.length).fill(0)];

/** out = a (op) b for f16 a and b, broadcasting. */
export function binaryHalf(kind: BinaryKind, a: Tensor, b: Tensor): Tensor {
  const gpu = checkHalfOperands(kind, { a, b });
  const outShape = broadcastShapes(kind, a.shape, b.shape);
  const size = sizeOf(outShape);
  const output = Tensor.empty(gpu, outShape, "f16");
  const params = new Params()
    .u32(size, outShape.length, 0, 0)
    .u32(...padded(outShape))
    .u32(...padded(broadcastStrides(a.shape, outShape)))
    .u32(...padded(broadcastStrides(b.shape, outShape)));
  launch(
    gpu,
    { name: kind, variant: "f16", code: BINARY_HALF_KERNELS[kind] },
    {
      bindings: [a, b, output],
      params,
      workgroups: grid(size, 256),
      flops: size,
      bytes: 2 * (a.size + b.size + size),
    },
  );
  return output;
}
