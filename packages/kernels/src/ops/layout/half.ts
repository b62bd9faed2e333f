/**
 * The f16 variants of the layout ops (inference only): concat, split, permute and nearest
 * upsampling. They only move values, so each kernel is its f32 kernel (slice-copy.ts,
 * permute-gather.ts, upsample.ts) with f16 storage: `enable f16;` and every `array<f32>` an
 * `array<f16>` (what `cxr kernels dump layout --variant f16` prints). Values are copied bit for bit.
 */
import { grid, launch } from "../../runtime/kernel.ts";
import { OpError, type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { checkHalfOperands } from "../common/half.ts";
import { PERMUTE } from "./permute-gather.ts";
import { SLICE_COPY } from "./slice-copy.ts";
import { UPSAMPLE } from "./upsample.ts";

/** A copy kernel's source with f16 storage instead of f32 (the kernels do no arithmetic on values). */
function withHalfStorage(source: string): string {
  if (!source.includes("array<f32>")) throw new Error("layout f16: kernel has no f32 storage to convert");
  return `enable f16;\n${source.trimStart().replaceAll("array<f32>", "array<f16>")}`;
}

export const LAYOUT_HALF_KERNELS = {
  sliceCopy: withHalfStorage(SLICE_COPY),
  permute: withHalfStorage(PERMUTE),
  upsampleNearest: withHalfStorage(UPSAMPLE.forward),
} as const;

function resolveAxis(op: string, axis: number, shape: Shape): number {
  const resolved = axis < 0 ? axis + shape.length : axis;
  if (!Number.isInteger(resolved) || resolved < 0 || resolved >= shape.length) {
    throw new OpError(op, `axis ${axis} is out of range for rank ${shape.length}`, { x: shape });
  }
  return resolved;
}

function sliceCopyHalf(slice: Tensor, whole: Tensor, axis: number, offset: number, intoWhole: boolean): void {
  const inner = sizeOf(whole.shape.slice(axis + 1));
  launch(
    whole.gpu,
    { name: intoWhole ? "concat" : "split", variant: "f16", code: LAYOUT_HALF_KERNELS.sliceCopy },
    {
      bindings: intoWhole ? [slice, whole] : [whole, slice],
      params: new Params().u32(
        slice.size,
        inner,
        slice.shape[axis],
        whole.shape[axis],
        offset,
        intoWhole ? 1 : 0,
      ),
      workgroups: grid(slice.size, 256),
      flops: 0,
      bytes: 4 * slice.size,
    },
  );
}

/** concat of f16 tensors along `axis`. */
export function concatHalf(tensors: Tensor[], axis: number): Tensor {
  const gpu = checkHalfOperands("concat", Object.fromEntries(tensors.map((t, index) => [`x${index}`, t])));
  const first = tensors[0];
  const resolved = resolveAxis("concat", axis, first.shape);
  for (const tensor of tensors) {
    const mismatch =
      tensor.rank !== first.rank ||
      tensor.shape.some((dim, index) => index !== resolved && dim !== first.shape[index]);
    if (mismatch) {
      const operands = Object.fromEntries(tensors.map((t, index) => [`x${index}`, t]));
      throw new OpError("concat", `shapes differ outside axis ${resolved}`, operands);
    }
  }
  const shape = [...first.shape];
  shape[resolved] = tensors.reduce((total, tensor) => total + tensor.shape[resolved], 0);
  const output = Tensor.empty(gpu, shape, "f16");
  let offset = 0;
  for (const tensor of tensors) {
    sliceCopyHalf(tensor, output, resolved, offset, true);
    offset += tensor.shape[resolved];
  }
  return output;
}

/** split of an f16 tensor along `axis` into pieces of `sizes`. */
export function splitHalf(x: Tensor, sizes: number[], axis: number): Tensor[] {
  const gpu = checkHalfOperands("split", { x });
  const resolved = resolveAxis("split", axis, x.shape);
  const total = sizes.reduce((sum, size) => sum + size, 0);
  if (sizes.some((size) => !Number.isInteger(size) || size < 1) || total !== x.shape[resolved]) {
    throw new OpError(
      "split",
      `sizes [${sizes.join(", ")}] do not partition axis ${resolved} of size ${x.shape[resolved]}`,
      { x },
    );
  }
  let offset = 0;
  return sizes.map((size) => {
    const shape = [...x.shape];
    shape[resolved] = size;
    const piece = Tensor.empty(gpu, shape, "f16");
    sliceCopyHalf(piece, x, resolved, offset, false);
    offset += size;
    return piece;
  });
}

const MAX_PERMUTE_RANK = 8;

/** permute of an f16 tensor (the permutation already checked by `permute`). */
export function permuteHalf(x: Tensor, permutation: number[]): Tensor {
  const gpu = checkHalfOperands("permute", { x });
  const rank = x.rank;
  const inputStrides: number[] = new Array(rank);
  let stride = 1;
  for (let axis = rank - 1; axis >= 0; axis--) {
    inputStrides[axis] = stride;
    stride *= x.shape[axis];
  }
  const outShape = permutation.map((axis) => x.shape[axis]);
  const pad = (values: number[]) => [...values, ...new Array(MAX_PERMUTE_RANK - values.length).fill(0)];
  const output = Tensor.empty(gpu, outShape, "f16");
  launch(
    gpu,
    { name: "permute", variant: "f16", code: LAYOUT_HALF_KERNELS.permute },
    {
      bindings: [x, output],
      params: new Params()
        .u32(x.size, rank, 0, 0)
        .u32(...pad(outShape))
        .u32(...pad(permutation.map((axis) => inputStrides[axis]))),
      workgroups: grid(x.size, 256),
      flops: 0,
      bytes: 4 * x.size,
    },
  );
  return output;
}

/** Nearest upsampling of an f16 [N, C, H, W] tensor (rank and factor already checked). */
export function upsampleNearestHalf(x: Tensor, factor: number): Tensor {
  const gpu = checkHalfOperands("upsampleNearest", { x });
  const [n, c, h, w] = x.shape;
  const output = Tensor.empty(gpu, [n, c, h * factor, w * factor], "f16");
  launch(
    gpu,
    { name: "upsampleNearest", variant: "f16", code: LAYOUT_HALF_KERNELS.upsampleNearest },
    {
      bindings: [x, output],
      params: new Params().u32(output.size, h, w, factor),
      workgroups: grid(output.size, 256),
      flops: 0,
      bytes: 2 * (x.size + output.size),
    },
  );
  return output;
}
