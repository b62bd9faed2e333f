/**
 * Data movement: concat and split along an axis (UNet skip connections and DenseNet dense blocks
 * concatenate channels), permute (attention heads: [B, L, H, D] <-> [B, H, L, D]; NCHW <-> tokens),
 * and nearest-neighbour upsampling of NCHW images.
 * Both concat and split are one strided slice-copy kernel run once per input.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

/**
 * Copies a [outer, sourceAxis, inner] block into (or out of) a [outer, targetAxis, inner] tensor
 * at `offset` along the middle axis. `direction` 0 writes into the big tensor, 1 reads from it.
 */
export const SLICE_COPY_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var<storage, read_write> destination: array<f32>;
struct Params { size: u32, inner: u32, sliceAxis: u32, wholeAxis: u32, offset: u32, intoWhole: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let innerIndex = index % params.inner;
  let sliceIndex = (index / params.inner) % params.sliceAxis;
  let outerIndex = index / (params.inner * params.sliceAxis);
  let wholeIndex = (outerIndex * params.wholeAxis + params.offset + sliceIndex) * params.inner + innerIndex;
  if (params.intoWhole == 1u) {
    destination[wholeIndex] = source[index];
  } else {
    destination[index] = source[wholeIndex];
  }
}`;

function normaliseAxis(op: string, axis: number, rank: number, shape: Shape): number {
  const resolved = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(resolved) || resolved < 0 || resolved >= rank) {
    throw new OpError(op, `axis ${axis} is out of range for rank ${rank}`, { x: shape });
  }
  return resolved;
}

function sliceCopy(slice: Tensor, whole: Tensor, axis: number, offset: number, intoWhole: boolean): void {
  const inner = sizeOf(whole.shape.slice(axis + 1));
  const size = slice.size;
  launch(
    whole.gpu,
    { name: intoWhole ? "concat" : "split", code: SLICE_COPY_WGSL },
    {
      bindings: intoWhole ? [slice, whole] : [whole, slice],
      params: new Params().u32(size, inner, slice.shape[axis], whole.shape[axis], offset, intoWhole ? 1 : 0),
      workgroups: grid(size, 256),
      flops: 0,
      bytes: 8 * size,
    },
  );
}

/** Joins tensors along `axis`; all other dimensions must match. */
export function concat(tensors: Tensor[], axis = 1): Tensor {
  if (tensors.length === 0) throw new OpError("concat", "needs at least one tensor");
  const first = tensors[0];
  const resolved = normaliseAxis("concat", axis, first.rank, first.shape);
  const operands = Object.fromEntries(tensors.map((tensor, index) => [`x${index}`, tensor]));
  for (const tensor of tensors) {
    if (tensor.dtype !== "f32")
      throw new OpError("concat", `needs f32 inputs, got ${tensor.dtype}`, operands);
    const mismatch =
      tensor.rank !== first.rank ||
      tensor.shape.some((dim, index) => index !== resolved && dim !== first.shape[index]);
    if (mismatch) throw new OpError("concat", `shapes differ outside axis ${resolved}`, operands);
  }
  const shape = [...first.shape];
  shape[resolved] = tensors.reduce((total, tensor) => total + tensor.shape[resolved], 0);
  const output = Tensor.empty(first.gpu, shape);
  let offset = 0;
  for (const tensor of tensors) {
    sliceCopy(tensor, output, resolved, offset, true);
    offset += tensor.shape[resolved];
  }
  if (needsGrad(...tensors)) {
    record("concat", tensors, [output], ([gradOutput]) => {
      let start = 0;
      return tensors.map((tensor) => {
        const begin = start;
        start += tensor.shape[resolved];
        if (!tensor.requiresGrad) return null;
        const grad = Tensor.empty(tensor.gpu, tensor.shape);
        sliceCopy(grad, gradOutput!, resolved, begin, false);
        return grad;
      });
    });
  }
  return output;
}

/** Splits `x` along `axis` into pieces of the given sizes (which must add up to that dimension). */
export function split(x: Tensor, sizes: number[], axis = 1): Tensor[] {
  const resolved = normaliseAxis("split", axis, x.rank, x.shape);
  const total = sizes.reduce((sum, size) => sum + size, 0);
  if (sizes.some((size) => !Number.isInteger(size) || size < 1) || total !== x.shape[resolved]) {
    throw new OpError(
      "split",
      `sizes [${sizes.join(", ")}] do not partition axis ${resolved} of size ${x.shape[resolved]}`,
      {
        x,
      },
    );
  }
  let offset = 0;
  const outputs = sizes.map((size) => {
    const shape = [...x.shape];
    shape[resolved] = size;
    const piece = Tensor.empty(x.gpu, shape);
    sliceCopy(piece, x, resolved, offset, false);
    offset += size;
    return piece;
  });
  if (needsGrad(x)) {
    record("split", [x], outputs, (gradOutputs) => {
      const grad = Tensor.zeros(x.gpu, x.shape);
      let start = 0;
      gradOutputs.forEach((gradPiece, index) => {
        if (gradPiece) sliceCopy(gradPiece, grad, resolved, start, true);
        start += sizes[index];
      });
      return [grad];
    });
  }
  return outputs;
}

const MAX_PERMUTE_RANK = 8;

/** output[index] = input[sum(coordinate[axis] * inputStride[permutation[axis]])]. */
export const PERMUTE_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params {
  size: u32, rank: u32, pad0: u32, pad1: u32,
  outShape: array<vec4<u32>, 2>,
  sourceStrides: array<vec4<u32>, 2>,
}
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  var rest = index;
  var offset = 0u;
  for (var axis = i32(params.rank) - 1; axis >= 0; axis--) {
    let dim = params.outShape[axis / 4][axis % 4];
    offset += (rest % dim) * params.sourceStrides[axis / 4][axis % 4];
    rest = rest / dim;
  }
  output[index] = input[offset];
}`;

function permuteRaw(x: Tensor, permutation: number[]): Tensor {
  const rank = x.rank;
  const inputStrides: number[] = new Array(rank);
  let stride = 1;
  for (let axis = rank - 1; axis >= 0; axis--) {
    inputStrides[axis] = stride;
    stride *= x.shape[axis];
  }
  const outShape = permutation.map((axis) => x.shape[axis]);
  const sourceStrides = permutation.map((axis) => inputStrides[axis]);
  const pad = (values: number[]) => [...values, ...new Array(MAX_PERMUTE_RANK - values.length).fill(0)];
  const output = Tensor.empty(x.gpu, outShape);
  launch(
    x.gpu,
    { name: "permute", code: PERMUTE_WGSL },
    {
      bindings: [x, output],
      params: new Params()
        .u32(x.size, rank, 0, 0)
        .u32(...pad(outShape))
        .u32(...pad(sourceStrides)),
      workgroups: grid(x.size, 256),
      flops: 0,
      bytes: 8 * x.size,
    },
  );
  return output;
}

/** Reorders axes: output axis i is input axis permutation[i] (like torch.permute). */
export function permute(x: Tensor, permutation: number[]): Tensor {
  const valid =
    permutation.length === x.rank &&
    [...permutation].sort((a, b) => a - b).every((axis, index) => axis === index);
  if (!valid)
    throw new OpError("permute", `[${permutation.join(", ")}] is not a permutation of ${x.rank} axes`, { x });
  if (x.rank > MAX_PERMUTE_RANK) throw new OpError("permute", `rank above ${MAX_PERMUTE_RANK}`, { x });
  if (x.dtype !== "f32") throw new OpError("permute", `needs f32 input, got ${x.dtype}`, { x });
  const output = permuteRaw(x, permutation);
  if (needsGrad(x)) {
    const inverse = new Array<number>(permutation.length);
    permutation.forEach((axis, index) => {
      inverse[axis] = index;
    });
    record("permute", [x], [output], ([gradOutput]) => [permuteRaw(gradOutput!, inverse)]);
  }
  return output;
}

/**
 * A copy with another shape of the same size, recorded for autograd (the gradient is reshaped back).
 * Use `Tensor.reshapeInto` instead when the source is a temporary you own.
 */
export function reshape(x: Tensor, shape: Shape): Tensor {
  if (sizeOf(shape) !== x.size) {
    throw new OpError("reshape", `sizes differ (${x.size} vs ${sizeOf(shape)})`, { x, to: shape });
  }
  const copy = (source: Tensor, to: Shape) => {
    const output = Tensor.empty(source.gpu, to, source.dtype);
    source.gpu.commandEncoder().copyBufferToBuffer(source.buffer, 0, output.buffer, 0, source.byteLength);
    return output;
  };
  const output = copy(x, shape);
  if (needsGrad(x)) record("reshape", [x], [output], ([gradOutput]) => [copy(gradOutput!, x.shape)]);
  return output;
}

const UPSAMPLE_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { size: u32, height: u32, width: u32, factor: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let outWidth = params.width * params.factor;
  let outHeight = params.height * params.factor;
  let x = index % outWidth;
  let y = (index / outWidth) % outHeight;
  let plane = index / (outWidth * outHeight);
  output[index] = input[(plane * params.height + y / params.factor) * params.width + x / params.factor];
}`;

/** Each input pixel gathers the factor x factor block of output gradients it was copied to. */
const UPSAMPLE_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32, height: u32, width: u32, factor: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let x = index % params.width;
  let y = (index / params.width) % params.height;
  let plane = index / (params.width * params.height);
  let outWidth = params.width * params.factor;
  let outHeight = params.height * params.factor;
  var total = 0.0;
  for (var dy = 0u; dy < params.factor; dy++) {
    let row = (plane * outHeight + y * params.factor + dy) * outWidth + x * params.factor;
    for (var dx = 0u; dx < params.factor; dx++) { total += gradOutput[row + dx]; }
  }
  gradInput[index] = total;
}`;

/** Nearest-neighbour upsampling of [N, C, H, W] by an integer factor (Stable Diffusion's Upsample2D). */
export function upsampleNearest(x: Tensor, factor = 2): Tensor {
  if (x.rank !== 4) throw new OpError("upsampleNearest", "expects [N, C, H, W]", { x });
  if (!Number.isInteger(factor) || factor < 1)
    throw new OpError("upsampleNearest", `invalid factor ${factor}`, { x });
  if (x.dtype !== "f32") throw new OpError("upsampleNearest", `needs f32 input, got ${x.dtype}`, { x });
  const [n, c, h, w] = x.shape;
  const output = Tensor.empty(x.gpu, [n, c, h * factor, w * factor]);
  launch(
    x.gpu,
    { name: "upsampleNearest", code: UPSAMPLE_WGSL },
    {
      bindings: [x, output],
      params: new Params().u32(output.size, h, w, factor),
      workgroups: grid(output.size, 256),
      flops: 0,
      bytes: 4 * (x.size + output.size),
    },
  );
  if (needsGrad(x)) {
    record("upsampleNearest", [x], [output], ([gradOutput]) => {
      const gradInput = Tensor.empty(x.gpu, x.shape);
      launch(
        x.gpu,
        { name: "upsampleNearestBackward", code: UPSAMPLE_BACKWARD_WGSL },
        {
          bindings: [gradOutput!, gradInput],
          params: new Params().u32(x.size, h, w, factor),
          workgroups: grid(x.size, 256),
          flops: output.size,
          bytes: 4 * (x.size + output.size),
        },
      );
      return [gradInput];
    });
  }
  return output;
}

/** Float64 references. */
export const layoutReference = {
  concat(inputs: Float64Array[], shapes: Shape[], axis: number): Float64Array {
    const inner = sizeOf(shapes[0].slice(axis + 1));
    const outer = sizeOf(shapes[0].slice(0, axis));
    const parts: number[] = [];
    for (let o = 0; o < outer; o++) {
      inputs.forEach((input, index) => {
        const block = shapes[index][axis] * inner;
        for (let k = 0; k < block; k++) parts.push(input[o * block + k]);
      });
    }
    return Float64Array.from(parts);
  },
  permute(x: Float64Array, shape: Shape, permutation: number[]): Float64Array {
    const rank = shape.length;
    const strides = new Array<number>(rank);
    let stride = 1;
    for (let axis = rank - 1; axis >= 0; axis--) {
      strides[axis] = stride;
      stride *= shape[axis];
    }
    const outShape = permutation.map((axis) => shape[axis]);
    const output = new Float64Array(x.length);
    for (let index = 0; index < x.length; index++) {
      let rest = index;
      let offset = 0;
      for (let axis = rank - 1; axis >= 0; axis--) {
        offset += (rest % outShape[axis]) * strides[permutation[axis]];
        rest = Math.floor(rest / outShape[axis]);
      }
      output[index] = x[offset];
    }
    return output;
  },
  upsampleNearest(x: Float64Array, shape: Shape, factor: number): Float64Array {
    const [n, c, h, w] = shape;
    const output = new Float64Array(n * c * h * factor * w * factor);
    let index = 0;
    for (let plane = 0; plane < n * c; plane++) {
      for (let y = 0; y < h * factor; y++) {
        for (let xx = 0; xx < w * factor; xx++) {
          output[index++] = x[(plane * h + Math.floor(y / factor)) * w + Math.floor(xx / factor)];
        }
      }
    }
    return output;
  },
  upsampleNearestBackward(gradOutput: Float64Array, shape: Shape, factor: number): Float64Array {
    const [n, c, h, w] = shape;
    const grad = new Float64Array(n * c * h * w);
    let index = 0;
    for (let plane = 0; plane < n * c; plane++) {
      for (let y = 0; y < h * factor; y++) {
        for (let xx = 0; xx < w * factor; xx++) {
          grad[(plane * h + Math.floor(y / factor)) * w + Math.floor(xx / factor)] += gradOutput[index++];
        }
      }
    }
    return grad;
  },
};
