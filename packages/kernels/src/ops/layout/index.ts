/**
 * Data movement: concat and split along an axis (UNet skip connections and DenseNet dense blocks
 * concatenate channels), permute (attention heads: [B, L, H, D] <-> [B, H, L, D]; NCHW <-> tokens),
 * reshape (a recorded buffer copy), and nearest-neighbour upsampling of NCHW images.
 * Both concat and split are one strided slice-copy kernel run once per input.
 *
 * Layout (ops/softmax/ is the worked example): `slice-copy.ts`, `permute-gather.ts`, `upsample.ts`
 * (each op's one variant), `reference.ts`, `cost.ts`. No choose.ts (one variant each) and no
 * bench.ts (memory-bound copies).
 */

import { needsGrad, record } from "../../runtime/autograd.ts";
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { copyCost, upsampleCost } from "./cost.ts";
import { concatHalf, permuteHalf, splitHalf, upsampleNearestHalf } from "./half.ts";
import { PERMUTE } from "./permute-gather.ts";
import { SLICE_COPY } from "./slice-copy.ts";
import { UPSAMPLE } from "./upsample.ts";

export {
  type ConcatParams,
  concatOpReference,
  layoutReference,
  type PermuteParams,
  permuteOpReference,
  type UpsampleParams,
  upsampleOpReference,
} from "./reference.ts";

/** The kernels by variant and pass (the launched kernels), exactly as launched (`cxr kernels dump layout`). */
export const LAYOUT_KERNELS = {
  default: {
    sliceCopy: SLICE_COPY,
    permute: PERMUTE,
    upsampleNearest: UPSAMPLE.forward,
    upsampleNearestBackward: UPSAMPLE.backward,
  },
} as const;

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
    { name: intoWhole ? "concat" : "split", code: LAYOUT_KERNELS.default.sliceCopy },
    {
      bindings: intoWhole ? [slice, whole] : [whole, slice],
      params: new Params().u32(size, inner, slice.shape[axis], whole.shape[axis], offset, intoWhole ? 1 : 0),
      workgroups: grid(size, 256),
      ...copyCost(size),
    },
  );
}

/** Joins tensors along `axis`; all other dimensions must match. */
export function concat(tensors: Tensor[], axis = 1): Tensor {
  if (tensors.length === 0) throw new OpError("concat", "needs at least one tensor");
  if (tensors[0].dtype === "f16") return concatHalf(tensors, axis); // half.ts: inference only
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
  if (x.dtype === "f16") return splitHalf(x, sizes, axis); // half.ts: inference only
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
    { name: "permute", code: LAYOUT_KERNELS.default.permute },
    {
      bindings: [x, output],
      params: new Params()
        .u32(x.size, rank, 0, 0)
        .u32(...pad(outShape))
        .u32(...pad(sourceStrides)),
      workgroups: grid(x.size, 256),
      ...copyCost(x.size),
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
  if (x.dtype === "f16") return permuteHalf(x, permutation); // half.ts: inference only
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
    return Tensor.empty(source.gpu, to, source.dtype).copyFrom(source);
  };
  const output = copy(x, shape);
  if (needsGrad(x)) record("reshape", [x], [output], ([gradOutput]) => [copy(gradOutput!, x.shape)]);
  return output;
}

/** Nearest-neighbour upsampling of [N, C, H, W] by an integer factor (Stable Diffusion's Upsample2D). */
export function upsampleNearest(x: Tensor, factor = 2): Tensor {
  if (x.rank !== 4) throw new OpError("upsampleNearest", "expects [N, C, H, W]", { x });
  if (!Number.isInteger(factor) || factor < 1)
    throw new OpError("upsampleNearest", `invalid factor ${factor}`, { x });
  if (x.dtype === "f16") return upsampleNearestHalf(x, factor); // half.ts: inference only
  if (x.dtype !== "f32") throw new OpError("upsampleNearest", `needs f32 input, got ${x.dtype}`, { x });
  const [n, c, h, w] = x.shape;
  const output = Tensor.empty(x.gpu, [n, c, h * factor, w * factor]);
  launch(
    x.gpu,
    { name: "upsampleNearest", code: LAYOUT_KERNELS.default.upsampleNearest },
    {
      bindings: [x, output],
      params: new Params().u32(output.size, h, w, factor),
      workgroups: grid(output.size, 256),
      ...upsampleCost(x.size, output.size, 0),
    },
  );
  if (needsGrad(x)) {
    record("upsampleNearest", [x], [output], ([gradOutput]) => {
      const gradInput = Tensor.empty(x.gpu, x.shape);
      launch(
        x.gpu,
        { name: "upsampleNearestBackward", code: LAYOUT_KERNELS.default.upsampleNearestBackward },
        {
          bindings: [gradOutput!, gradInput],
          params: new Params().u32(x.size, h, w, factor),
          workgroups: grid(x.size, 256),
          ...upsampleCost(x.size, output.size, output.size),
        },
      );
      return [gradInput];
    });
  }
  return output;
}
