/**
 * Variant "broadcast": each invocation maps its output index to the two input offsets through
 * per-axis broadcast strides (0 where an input has size 1), up to rank 8 (two vec4s per array).
 */
import { wgsl } from "../../runtime/kernel.ts";
import { elementwiseKernel, type FloatElement, floatHead, store, widen } from "../common/elementwise.ts";
import { BINARY_EXPRESSIONS, type BinaryKind } from "./expressions.ts";

/**
 * out = a (op) b with a, b and out stored as `element`: the f32 kernels here, the f16 ones in
 * half.ts (operands widened to f32, one rounding at the store).
 */
export function broadcastTemplate(element: FloatElement): string {
  return elementwiseKernel({
    head: floatHead(element),
    declarations: `@group(0) @binding(0) var<storage, read> left: array<${element}>;
@group(0) @binding(1) var<storage, read> right: array<${element}>;
@group(0) @binding(2) var<storage, read_write> output: array<${element}>;
struct Params {
  size: u32, rank: u32, pad0: u32, pad1: u32,
  shape: array<vec4<u32>, 2>,
  leftStrides: array<vec4<u32>, 2>,
  rightStrides: array<vec4<u32>, 2>,
}
@group(0) @binding(3) var<uniform> params: Params;`,
    body: `  var rest = index;
  var leftOffset = 0u;
  var rightOffset = 0u;
  for (var axis = i32(params.rank) - 1; axis >= 0; axis--) {
    let dim = params.shape[axis / 4][axis % 4];
    let coordinate = rest % dim;
    rest = rest / dim;
    leftOffset += coordinate * params.leftStrides[axis / 4][axis % 4];
    rightOffset += coordinate * params.rightStrides[axis / 4][axis % 4];
  }
  let a = ${widen(element, "left[leftOffset]")};
  let b = ${widen(element, "right[rightOffset]")};
  output[index] = ${store(element, "{{expression}}")};`,
  });
}

/** The kernel of each op for `element` storage. */
export function broadcastKernels(element: FloatElement): Readonly<Record<BinaryKind, string>> {
  const template = broadcastTemplate(element);
  return {
    add: wgsl(template, { expression: BINARY_EXPRESSIONS.add }),
    sub: wgsl(template, { expression: BINARY_EXPRESSIONS.sub }),
    mul: wgsl(template, { expression: BINARY_EXPRESSIONS.mul }),
    div: wgsl(template, { expression: BINARY_EXPRESSIONS.div }),
  };
}

export const BROADCAST: Readonly<Record<BinaryKind, string>> = broadcastKernels("f32");
