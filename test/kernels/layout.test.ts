/**
 * The layout ops (ops/layout/): concat, permute and upsampleNearest as checkOp tables (forward exact,
 * gradients against the float64 references, reference gradients by finite differences, bad input);
 * split and reshape, whose outputs do not fit one table, as tests of their own; then the dump.
 */
import { backward, concat, OpError, permute, reshape, split, Tensor, upsampleNearest } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { LAYOUT_KERNELS } from "../../packages/kernels/src/ops/layout/index.ts";
import {
  type ConcatParams,
  concatOpReference,
  type PermuteParams,
  permuteOpReference,
  type UpsampleParams,
  upsampleOpReference,
} from "../../packages/kernels/src/ops/layout/reference.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { checkOp, type OpCase } from "./check-op.ts";
import { compiledWhile } from "./compiled.ts";
import { expectClose, gpu, randomValues, upload } from "./helpers.ts";

const exact = { atol: 0, rtol: 0 };

function concatCase(
  reason: string,
  shapes: number[][],
  axis: number,
  finiteDifferences = false,
): OpCase<ConcatParams> {
  const resolved = axis < 0 ? axis + shapes[0].length : axis;
  return { reason, params: { shapes, axis: resolved }, inputs: shapes, finiteDifferences };
}

checkOp(
  {
    name: "concat",
    variants: ["default"],
    reference: concatOpReference,
    run: (inputs, { axis }) => concat([...inputs], axis),
    // Copies: exact both ways.
    tolerance: () => ({ forward: exact, backward: exact }),
  },
  [
    concatCase(
      "size-1 tensors on the channel axis",
      [
        [1, 1, 1, 1],
        [1, 2, 1, 1],
      ],
      1,
    ),
    concatCase(
      "three inputs, odd sizes, one of width 1",
      [
        [2, 3, 5, 7],
        [2, 1, 5, 7],
        [2, 4, 5, 7],
      ],
      1,
    ),
    concatCase(
      "the first axis",
      [
        [3, 5],
        [4, 5],
      ],
      0,
    ),
    concatCase(
      "the last axis given as -1",
      [
        [2, 3, 33],
        [2, 3, 1],
      ],
      -1,
    ),
    concatCase(
      "a UNet skip connection (320 + 640 channels)",
      [
        [2, 320, 17, 9],
        [2, 640, 17, 9],
      ],
      1,
    ),
    concatCase(
      "small, for finite differences",
      [
        [2, 2, 3],
        [2, 1, 3],
      ],
      1,
      true,
    ),
  ],
  [
    {
      reason: "shapes that differ outside the axis",
      run: (device) =>
        concat([Tensor.upload(device, [1, 2, 3, 4], [2, 2]), Tensor.upload(device, [1, 2, 3], [3, 1])], 0),
      throws: "concat: shapes differ outside axis 0 (x0: [2, 2], x1: [3, 1])",
    },
    {
      reason: "an axis out of range",
      run: (device) => concat([Tensor.upload(device, [1, 2, 3, 4], [2, 2])], 2),
      throws: "concat: axis 2 is out of range for rank 2 (x: [2, 2])",
    },
    {
      reason: "no tensors",
      run: () => concat([], 0),
      throws: "concat: needs at least one tensor",
    },
    {
      reason: "split sizes that do not partition the axis",
      run: (device) => split(Tensor.upload(device, [1, 2, 3, 4], [2, 2]), [1, 2], 0),
      throws: "split: sizes [1, 2] do not partition axis 0 of size 2 (x: [2, 2])",
    },
  ],
);

const permuteCase = (
  reason: string,
  shape: number[],
  permutation: number[],
  finiteDifferences = false,
): OpCase<PermuteParams> => ({
  reason,
  params: { shape, permutation },
  inputs: [shape],
  finiteDifferences,
});

checkOp(
  {
    name: "permute",
    variants: ["default"],
    reference: permuteOpReference,
    run: ([x], { permutation }) => permute(x, permutation),
    tolerance: () => ({ forward: exact, backward: exact }),
  },
  [
    permuteCase("rank 1", [1], [0]),
    permuteCase("a transpose", [2, 3], [1, 0]),
    permuteCase("swap the middle axes, odd sizes", [2, 5, 3, 7], [0, 2, 1, 3]),
    permuteCase("rank 5, a size-1 axis", [3, 1, 4, 2, 5], [4, 2, 0, 3, 1]),
    permuteCase("attention heads [B, L, H, D] -> [B, H, L, D]", [2, 4096, 5, 64], [0, 2, 1, 3]),
    permuteCase("small rank 3, for finite differences", [2, 3, 4], [2, 0, 1], true),
  ],
  [
    {
      reason: "not a permutation",
      run: (device) => permute(Tensor.upload(device, randomValues(24, 2), [2, 3, 4]), [0, 0, 1]),
      throws: "permute: [0, 0, 1] is not a permutation of 3 axes (x: [2, 3, 4])",
    },
    {
      reason: "a reshape to another size",
      run: (device) => reshape(Tensor.upload(device, randomValues(24, 2), [2, 3, 4]), [5, 5]),
      throws: "reshape: sizes differ (24 vs 25) (x: [2, 3, 4], to: [5, 5])",
    },
  ],
);

const upsampleCase = (
  reason: string,
  shape: number[],
  factor: number,
  finiteDifferences = false,
): OpCase<UpsampleParams> => ({
  reason,
  params: { shape, factor },
  inputs: [shape],
  finiteDifferences,
});

checkOp(
  {
    name: "upsampleNearest",
    variants: ["default"],
    reference: upsampleOpReference,
    run: ([x], { factor }) => upsampleNearest(x, factor),
    // The forward copies; the backward adds factor^2 gradients in f32.
    tolerance: () => ({ forward: exact, backward: { atol: 1e-5, rtol: 1e-5 } }),
  },
  [
    upsampleCase("one pixel", [1, 1, 1, 1], 2),
    upsampleCase("odd sizes", [2, 3, 5, 7], 2),
    upsampleCase("factor 3", [1, 4, 9, 4], 3),
    upsampleCase("SD's Upsample2D at 320 channels", [2, 320, 16, 16], 2),
    upsampleCase("small, for finite differences", [1, 2, 3, 2], 2, true),
  ],
  [
    {
      reason: "input that is not 4-D",
      run: (device) => upsampleNearest(Tensor.upload(device, [1, 2, 3], [3])),
      throws: "upsampleNearest: expects [N, C, H, W] (x: [3])",
    },
    {
      reason: "a factor of 0",
      run: (device) => upsampleNearest(Tensor.upload(device, [1], [1, 1, 1, 1]), 0),
      throws: "upsampleNearest: invalid factor 0 (x: [1, 1, 1, 1])",
    },
  ],
);

describe("layout: the rest", () => {
  it("concat's errors are OpErrors", async () => {
    const a = await upload([1, 2, 3, 4], [2, 2]);
    const b = await upload([1, 2, 3], [3, 1]);
    expect(() => concat([a, b], 0)).toThrow(OpError);
  });

  it.each([
    [
      [2, 3, 5, 7],
      [0, 2, 1, 3],
    ],
    [
      [3, 1, 4, 2, 5],
      [4, 2, 0, 3, 1],
    ],
  ])("permute %j by %j gives the permuted shape", async (shape, permutation) => {
    const x = await upload(
      randomValues(
        shape.reduce((a, b) => a * b, 1),
        31,
      ),
      shape,
    );
    expect(permute(x, permutation).shape).toEqual(permutation.map((axis) => shape[axis]));
  });

  it("split's gradient reassembles the pieces, with zeros for pieces that got none", async () => {
    const x = await upload(randomValues(2 * 7 * 3, 1), [2, 7, 3], true);
    const [first, , third] = split(x, [2, 4, 1], 1);
    const g1 = randomValues(first.size, 5);
    const g3 = randomValues(third.size, 6);
    const total = concat([
      await upload(g1, first.shape),
      Tensor.zeros(await gpu(), [2, 4, 3]),
      await upload(g3, third.shape),
    ]);
    // Sum the two outputs' contributions through a concat so one backward reaches both pieces.
    const joined = concat([first, third], 1);
    backward(
      joined,
      await upload([...g1.slice(0, 6), ...g3.slice(0, 3), ...g1.slice(6), ...g3.slice(3)], joined.shape),
    );
    expectClose(await x.grad!.download(), await total.download(), exact, "split grad");
  });

  it("reshape copies and routes the gradient back in the input's shape", async () => {
    const x = await upload(randomValues(24, 2), [2, 3, 4], true);
    const y = reshape(x, [6, 4]);
    const gy = randomValues(24, 3);
    backward(y, await upload(gy, [6, 4]));
    expect(x.grad!.shape).toEqual([2, 3, 4]);
    expectClose(await x.grad!.download(), gy, exact, "reshape backward");
    expect(() => reshape(x, [5, 5])).toThrow(
      /reshape: sizes differ \(24 vs 25\) \(x: \[2, 3, 4\], to: \[5, 5\]\)/,
    );
    expect(() => permute(x, [0, 0, 1])).toThrow(/permute: \[0, 0, 1\] is not a permutation of 3 axes/);
  });

  it("the WGSL that `cxr kernels dump layout` prints is what runs", async () => {
    const k = LAYOUT_KERNELS.default;
    const compiled = await compiledWhile(async (device) => {
      const x = Tensor.upload(device, randomValues(8, 1), [1, 2, 2, 2]).trainable();
      const joined = concat([x, x], 1);
      const [, second] = split(joined, [2, 2], 1);
      const moved = permute(second, [0, 2, 3, 1]);
      const up = upsampleNearest(permute(moved, [0, 3, 1, 2]), 2);
      await up.download();
    });
    expect(compiled).toEqual([
      k.sliceCopy,
      k.sliceCopy,
      k.sliceCopy,
      k.sliceCopy,
      k.permute,
      k.permute,
      k.upsampleNearest,
    ]);
    expect(dumpKernelSources({ op: "layout", pass: "permute" })).toBe(
      `// layout / default / permute${k.permute}\n`,
    );
  });
});
