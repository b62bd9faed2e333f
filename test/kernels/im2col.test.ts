/**
 * im2col and conv2dIm2col (ops/im2col/): im2col and its gradient (col2im) against the float64
 * reference, and the im2col + matmul convolution against conv2d's float64 reference (an independent
 * oracle: direct loops over the window), both as check-op.ts tables; the references against finite
 * differences, bad input with its exact message, the variant choice, and the WGSL that
 * `cxr kernels dump im2col` prints being the WGSL that runs.
 */
import { backward, conv2dIm2col, type Gpu, im2col, Tensor, type WindowOptions } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { type Conv2dParams, conv2dOpReference } from "../../packages/kernels/src/ops/conv2d/reference.ts";
import {
  chooseIm2colVariant,
  IM2COL_KERNELS,
  IM2COL_VARIANTS,
} from "../../packages/kernels/src/ops/im2col/index.ts";
import { type Im2colParams, im2colOpReference } from "../../packages/kernels/src/ops/im2col/reference.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { gpu, randomValues, upload } from "./helpers.ts";

/** The convolutions of the table: input, weight [O, C, kH, kW], window. */
const convolutions: [string, number[], number[], WindowOptions][] = [
  ["1x1", [1, 1, 1, 1], [1, 1, 1, 1], { stride: 1, padding: 0, dilation: 1 }],
  ["3x3 pad 1", [2, 3, 7, 5], [4, 3, 3, 3], { stride: 1, padding: 1, dilation: 1 }],
  ["3x3 stride 2 odd input", [1, 2, 9, 8], [3, 2, 3, 3], { stride: 2, padding: 1, dilation: 1 }],
  ["dilation 2", [1, 2, 9, 9], [2, 2, 3, 3], { stride: 1, padding: 2, dilation: 2 }],
  [
    "7x7 stride 2 pad 3 (DenseNet stem)",
    [2, 1, 32, 32],
    [8, 1, 7, 7],
    { stride: 2, padding: 3, dilation: 1 },
  ],
];

const im2colCases: OpCase<Im2colParams>[] = [
  ...convolutions.map(([reason, x, w, options]) => ({
    reason,
    params: { x, kernel: [w[2], w[3]] as [number, number], options },
    inputs: [x],
  })),
  {
    reason: "small 3x3 stride 2 pad 1, for finite differences (col2im is im2col's adjoint)",
    params: { x: [1, 2, 5, 4], kernel: [3, 3], options: { stride: 2, padding: 1 } },
    inputs: [[1, 2, 5, 4]],
    finiteDifferences: true,
  },
];

const convCases: OpCase<Conv2dParams>[] = [
  ...convolutions.map(([reason, x, w, options]) => ({
    reason,
    params: { x, w, bias: true, options },
    inputs: [x, w, [w[0]]],
  })),
  {
    reason: "small 3x3 stride 2, for finite differences",
    params: { x: [1, 2, 5, 4], w: [3, 2, 3, 3], bias: true, options: { stride: 2, padding: 1 } },
    inputs: [[1, 2, 5, 4], [3, 2, 3, 3], [3]],
    finiteDifferences: true,
  },
];

/** Makes zero tensors of these shapes for a bad call, released afterwards. */
function withZeros(device: Gpu, shapes: number[][], call: (tensors: Tensor[]) => unknown): unknown {
  const tensors = shapes.map((shape) => Tensor.zeros(device, shape));
  try {
    return call(tensors);
  } finally {
    for (const tensor of tensors) tensor.release();
  }
}

const im2colBadInputs: BadInputCase[] = [
  {
    reason: "a kernel larger than the padded input",
    run: (device) => withZeros(device, [[2, 3, 4, 4]], ([x]) => im2col(x, [7, 7])),
    throws: "im2col: kernel 7x7 is larger than the padded input (output -2x-2) (x: [2, 3, 4, 4])",
  },
  {
    reason: "dilation 0",
    run: (device) => withZeros(device, [[2, 3, 4, 4]], ([x]) => im2col(x, [3, 3], { dilation: 0 })),
    throws: "im2col: dilation must be an integer >= 1 or a pair of them, got 0",
  },
  {
    reason: "negative padding",
    run: (device) => withZeros(device, [[2, 3, 4, 4]], ([x]) => im2col(x, [3, 3], { padding: -1 })),
    throws: "im2col: padding must be an integer >= 0 or a pair of them, got -1",
  },
  {
    reason: "an input that is not [N, C, H, W]",
    run: (device) => withZeros(device, [[3, 4, 4]], ([x]) => im2col(x, [3, 3])),
    throws: "im2col: input must be [N, C, H, W] (x: [3, 4, 4])",
  },
  {
    reason: "a u32 input",
    run: (device) => im2col(Tensor.upload(device, [1, 2, 3, 4], [1, 1, 2, 2], "u32"), [1, 1]),
    throws: "im2col: needs f32 input, got u32 (x: [1, 1, 2, 2])",
  },
];

const convBadInputs: BadInputCase[] = [
  {
    reason: "input channels that do not match the weight",
    run: (device) =>
      withZeros(
        device,
        [
          [2, 3, 4, 4],
          [5, 2, 3, 3],
        ],
        ([x, w]) => conv2dIm2col(x, w, null),
      ),
    throws:
      "conv2dIm2col: x must be [N, 2, H, W] to match the weight (x: [2, 3, 4, 4], weight: [5, 2, 3, 3])",
  },
  {
    reason: "a weight that is not [O, C, kH, kW]",
    run: (device) =>
      withZeros(
        device,
        [
          [2, 3, 4, 4],
          [5, 27],
        ],
        ([x, w]) => conv2dIm2col(x, w, null),
      ),
    throws: "conv2dIm2col: weight must be [O, C, kH, kW] (x: [2, 3, 4, 4], weight: [5, 27])",
  },
  {
    reason: "a bias of the wrong shape",
    run: (device) =>
      withZeros(device, [[2, 3, 4, 4], [5, 3, 3, 3], [4]], ([x, w, bias]) => conv2dIm2col(x, w, bias)),
    throws: "conv2dIm2col: bias must be [5] (weight: [5, 3, 3, 3], bias: [4])",
  },
  {
    reason: "a kernel larger than the padded input",
    run: (device) =>
      withZeros(
        device,
        [
          [2, 3, 4, 4],
          [5, 3, 7, 7],
        ],
        ([x, w]) => conv2dIm2col(x, w, null),
      ),
    throws:
      "conv2dIm2col: kernel 7x7 is larger than the padded input (output -2x-2) (x: [2, 3, 4, 4], weight: [5, 3, 7, 7])",
  },
];

checkOp(
  {
    name: "im2col",
    variants: IM2COL_VARIANTS,
    reference: im2colOpReference,
    run: ([x], { kernel, options }) => im2col(x, kernel, options),
    // The forward copies values exactly; col2im adds at most kH * kW values per pixel.
    tolerance: () => ({ forward: { atol: 0, rtol: 0 }, backward: { atol: 1e-5, rtol: 1e-5 } }),
  },
  im2colCases,
  im2colBadInputs,
);

checkOp(
  {
    name: "conv2dIm2col",
    variants: IM2COL_VARIANTS,
    reference: conv2dOpReference,
    run: ([x, w, bias], { options }) => conv2dIm2col(x, w, bias ?? null, options),
    tolerance: () => ({ forward: { atol: 1e-4, rtol: 1e-4 }, backward: { atol: 1e-4, rtol: 1e-4 } }),
  },
  convCases,
  convBadInputs,
);

describe("im2col: the rest", () => {
  it("chooses the gather kernels on every adapter (no GPU needed)", () => {
    for (const kind of ["cpu", "integrated", "discrete"] as const)
      expect(chooseIm2colVariant({ kind })).toBe("gather");
  });

  it("the WGSL that `cxr kernels dump im2col` prints is what runs", async () => {
    const device = await gpu();
    const compiled: string[] = [];
    const pipeline = device.pipeline.bind(device);
    const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
      compiled.push(code);
      return pipeline(code, label, entryPoint);
    };
    device.pipeline = spy;
    try {
      const x = await upload(randomValues(2 * 3 * 5 * 5, 1), [2, 3, 5, 5], true);
      const cols = im2col(x, [3, 3], { padding: 1 });
      backward(cols, await upload(randomValues(cols.size, 2), cols.shape));
      await x.grad!.download();
      x.release();
      cols.release();
    } finally {
      delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
    }
    expect(compiled).toEqual([IM2COL_KERNELS.gather.forward, IM2COL_KERNELS.gather.backward]);
  });
});
