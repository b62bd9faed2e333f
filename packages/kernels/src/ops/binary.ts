/**
 * Elementwise add, sub, mul, div with NumPy broadcasting (up to rank 8). Equal shapes take a flat
 * fast path; otherwise each input is read through broadcast strides (stride 0 on expanded axes).
 * Backward reduces each gradient back to its input's shape with `sumToShape`.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";
import { copyTensor, sumToShape } from "./reduce.ts";
import { unary } from "./unary/index.ts";

export type BinaryKind = "add" | "sub" | "mul" | "div";

const EXPRESSIONS: Record<BinaryKind, string> = { add: "a + b", sub: "a - b", mul: "a * b", div: "a / b" };
const MAX_RANK = 8;

const FLAT_TEMPLATE = `
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

/** Output index -> input offsets through per-axis broadcast strides (0 where the input has size 1). */
const BROADCAST_TEMPLATE = `
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

export const binaryFlatSource = (kind: BinaryKind) => wgsl(FLAT_TEMPLATE, { expression: EXPRESSIONS[kind] });
export const binaryBroadcastSource = (kind: BinaryKind) =>
  wgsl(BROADCAST_TEMPLATE, { expression: EXPRESSIONS[kind] });

/** NumPy broadcasting of two shapes; throws OpError naming `op` when they are incompatible. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const rank = Math.max(a.length, b.length);
  const shape: number[] = [];
  for (let axis = 0; axis < rank; axis++) {
    const da = a[a.length - rank + axis] ?? 1;
    const db = b[b.length - rank + axis] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new OpError(op, `shapes cannot be broadcast together (axis ${axis}: ${da} vs ${db})`, { a, b });
    }
    shape.push(Math.max(da, db));
  }
  if (rank > MAX_RANK) throw new OpError(op, `rank ${rank} exceeds the maximum ${MAX_RANK}`, { a, b });
  return shape;
}

/** Row-major strides of `shape` read as broadcast to `outShape` (0 on expanded axes). */
export function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const strides = new Array<number>(outShape.length).fill(0);
  let stride = 1;
  for (let axis = shape.length - 1; axis >= 0; axis--) {
    const outAxis = outShape.length - shape.length + axis;
    strides[outAxis] = shape[axis] === 1 ? 0 : stride;
    stride *= shape[axis];
  }
  return strides;
}

function padded(values: number[]): number[] {
  return [...values, ...new Array(MAX_RANK - values.length).fill(0)];
}

function binaryRaw(kind: BinaryKind, a: Tensor, b: Tensor): Tensor {
  for (const [name, tensor] of [
    ["a", a],
    ["b", b],
  ] as const) {
    if (tensor.dtype !== "f32")
      throw new OpError(kind, `needs f32 inputs, ${name} is ${tensor.dtype}`, { a, b });
  }
  if (a.gpu !== b.gpu) throw new OpError(kind, "inputs live on different devices", { a, b });
  const outShape = broadcastShapes(kind, a.shape, b.shape);
  const output = Tensor.empty(a.gpu, outShape);
  const size = output.size;
  const cost = { flops: size, bytes: 4 * (a.size + b.size + size) };
  if (a.size === size && b.size === size) {
    launch(
      a.gpu,
      { name: kind, variant: "flat", code: binaryFlatSource(kind) },
      { bindings: [a, b, output], params: new Params().u32(size), workgroups: grid(size, 256), ...cost },
    );
  } else {
    const params = new Params()
      .u32(size, outShape.length, 0, 0)
      .u32(...padded(outShape))
      .u32(...padded(broadcastStrides(a.shape, outShape)))
      .u32(...padded(broadcastStrides(b.shape, outShape)));
    launch(
      a.gpu,
      { name: kind, variant: "broadcast", code: binaryBroadcastSource(kind) },
      { bindings: [a, b, output], params, workgroups: grid(size, 256), ...cost },
    );
  }
  return output;
}

/** Gradient of one input: reduce the broadcast gradient back to the input's shape. */
function reduced(grad: Tensor, shape: Shape): Tensor {
  if (sizeOf(shape) === grad.size) return grad.reshapeInto(shape);
  const result = sumToShape(grad, shape);
  grad.release();
  return result;
}

/** out = a (op) b, broadcasting. */
export function binary(kind: BinaryKind, a: Tensor, b: Tensor): Tensor {
  const output = binaryRaw(kind, a, b);
  if (needsGrad(a, b)) {
    record(kind, [a, b], [output], ([gradOutput]) => {
      const gy = gradOutput!;
      const gradA = a.requiresGrad ? binaryGradA(kind, gy, a, b) : null;
      const gradB = b.requiresGrad ? binaryGradB(kind, gy, a, b) : null;
      return [gradA, gradB];
    });
  }
  return output;
}

function binaryGradA(kind: BinaryKind, gy: Tensor, a: Tensor, b: Tensor): Tensor {
  // d(a+b)/da = d(a-b)/da = 1; d(ab)/da = b; d(a/b)/da = 1/b
  if (kind === "add" || kind === "sub") return reduced(copyTensor(gy), a.shape);
  return reduced(binaryRaw(kind === "mul" ? "mul" : "div", gy, b), a.shape);
}

function binaryGradB(kind: BinaryKind, gy: Tensor, a: Tensor, b: Tensor): Tensor {
  if (kind === "add") return reduced(copyTensor(gy), b.shape);
  if (kind === "sub") return reduced(negate(gy), b.shape);
  if (kind === "mul") return reduced(binaryRaw("mul", gy, a), b.shape);
  // d(a/b)/db = -a / b^2 = -(a/b)/b
  const quotient = binaryRaw("div", a, b);
  const over = binaryRaw("div", quotient, b);
  quotient.release();
  const product = binaryRaw("mul", gy, over);
  over.release();
  const result = negate(product);
  product.release();
  return reduced(result, b.shape);
}

/** -x through the scale kernel: no scalar upload, so backward never flushes the batch midway. */
function negate(source: Tensor): Tensor {
  return unary("scale", source, -1);
}

export const add = (a: Tensor, b: Tensor) => binary("add", a, b);
export const sub = (a: Tensor, b: Tensor) => binary("sub", a, b);
export const mul = (a: Tensor, b: Tensor) => binary("mul", a, b);
export const div = (a: Tensor, b: Tensor) => binary("div", a, b);

/** Float64 references with the same broadcasting. */
export const binaryReference = {
  forward(kind: BinaryKind, a: Float64Array, aShape: Shape, b: Float64Array, bShape: Shape): Float64Array {
    const outShape = broadcastShapes(kind, aShape, bShape);
    const aStrides = broadcastStrides(aShape, outShape);
    const bStrides = broadcastStrides(bShape, outShape);
    const output = new Float64Array(sizeOf(outShape));
    for (let index = 0; index < output.length; index++) {
      let rest = index;
      let ai = 0;
      let bi = 0;
      for (let axis = outShape.length - 1; axis >= 0; axis--) {
        const coordinate = rest % outShape[axis];
        rest = Math.floor(rest / outShape[axis]);
        ai += coordinate * aStrides[axis];
        bi += coordinate * bStrides[axis];
      }
      const x = a[ai];
      const y = b[bi];
      output[index] = kind === "add" ? x + y : kind === "sub" ? x - y : kind === "mul" ? x * y : x / y;
    }
    return output;
  },
  /** Gradients of sum(gradOutput * (a op b)) with respect to a and b. */
  backward(
    kind: BinaryKind,
    a: Float64Array,
    aShape: Shape,
    b: Float64Array,
    bShape: Shape,
    gradOutput: Float64Array,
  ): [Float64Array, Float64Array] {
    const outShape = broadcastShapes(kind, aShape, bShape);
    const aStrides = broadcastStrides(aShape, outShape);
    const bStrides = broadcastStrides(bShape, outShape);
    const gradA = new Float64Array(a.length);
    const gradB = new Float64Array(b.length);
    for (let index = 0; index < gradOutput.length; index++) {
      let rest = index;
      let ai = 0;
      let bi = 0;
      for (let axis = outShape.length - 1; axis >= 0; axis--) {
        const coordinate = rest % outShape[axis];
        rest = Math.floor(rest / outShape[axis]);
        ai += coordinate * aStrides[axis];
        bi += coordinate * bStrides[axis];
      }
      const g = gradOutput[index];
      const x = a[ai];
      const y = b[bi];
      if (kind === "add") {
        gradA[ai] += g;
        gradB[bi] += g;
      } else if (kind === "sub") {
        gradA[ai] += g;
        gradB[bi] -= g;
      } else if (kind === "mul") {
        gradA[ai] += g * y;
        gradB[bi] += g * x;
      } else {
        gradA[ai] += g / y;
        gradB[bi] -= (g * x) / (y * y);
      }
    }
    return [gradA, gradB];
  },
};
