import {
  backward,
  concat,
  layoutReference,
  OpError,
  permute,
  reshape,
  split,
  Tensor,
  upsampleNearest,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

const exact = { atol: 0, rtol: 0 };

describe("concat and split", () => {
  const cases: [number[][], number][] = [
    [
      [
        [1, 1, 1, 1],
        [1, 2, 1, 1],
      ],
      1,
    ],
    [
      [
        [2, 3, 5, 7],
        [2, 1, 5, 7],
        [2, 4, 5, 7],
      ],
      1,
    ],
    [
      [
        [3, 5],
        [4, 5],
      ],
      0,
    ],
    [
      [
        [2, 3, 33],
        [2, 3, 1],
      ],
      -1,
    ],
    [
      [
        [2, 320, 17, 9],
        [2, 640, 17, 9],
      ],
      1,
    ],
  ];
  it.each(cases)(
    "concat %j on axis %i matches the reference, and its gradient splits back",
    async (shapes, axis) => {
      const resolved = axis < 0 ? axis + shapes[0].length : axis;
      const values = shapes.map((shape, index) =>
        randomValues(
          shape.reduce((a, b) => a * b, 1),
          3 + index,
        ),
      );
      const tensors = await Promise.all(values.map((value, index) => upload(value, shapes[index], true)));
      const output = concat(tensors, axis);
      expectClose(await output.download(), layoutReference.concat(values, shapes, resolved), exact, "concat");
      const gradOutput = randomValues(output.size, 99);
      backward(output, await upload(gradOutput, output.shape));
      // The gradient of each input is its own slice of the output gradient: split the reference.
      const pieces = split(
        await upload(gradOutput, output.shape),
        shapes.map((shape) => shape[resolved]),
        axis,
      );
      for (let index = 0; index < tensors.length; index++) {
        expectClose(
          await tensors[index].grad!.download(),
          await pieces[index].download(),
          exact,
          `grad ${index}`,
        );
      }
    },
  );

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

  it("rejects mismatched shapes and bad sizes with the op and shapes named", async () => {
    const a = await upload([1, 2, 3, 4], [2, 2]);
    const b = await upload([1, 2, 3], [3, 1]);
    expect(() => concat([a, b], 0)).toThrow(OpError);
    expect(() => concat([a, b], 0)).toThrow(
      /concat: shapes differ outside axis 0 \(x0: \[2, 2\], x1: \[3, 1\]\)/,
    );
    expect(() => split(a, [1, 2], 0)).toThrow(/split: sizes \[1, 2\] do not partition axis 0 of size 2/);
    expect(() => concat([a], 2)).toThrow(/concat: axis 2 is out of range/);
  });
});

describe("upsampleNearest", () => {
  it.each([
    [[1, 1, 1, 1], 2],
    [[2, 3, 5, 7], 2],
    [[1, 4, 9, 4], 3],
    [[2, 320, 16, 16], 2],
  ])("shape %j factor %i: forward and backward match the reference", async (shape, factor) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const xValues = randomValues(size, 17);
    const x = await upload(xValues, shape, true);
    const y = upsampleNearest(x, factor);
    expectClose(
      await y.download(),
      layoutReference.upsampleNearest(xValues, shape, factor),
      exact,
      "upsample",
    );
    const gy = randomValues(y.size, 18);
    backward(y, await upload(gy, y.shape));
    expectClose(
      await x.grad!.download(),
      layoutReference.upsampleNearestBackward(gy, shape, factor),
      { atol: 1e-5, rtol: 1e-5 },
      "upsample backward",
    );
  });

  it("reference backward agrees with finite differences", () => {
    const shape = [1, 2, 3, 2];
    const x = randomValues(12, 4);
    const gy = randomValues(48, 5);
    const numeric = finiteDifferenceGradient(
      ([input]) => layoutReference.upsampleNearest(input, shape, 2),
      [x],
      gy,
      0,
    );
    expectClose(
      layoutReference.upsampleNearestBackward(gy, shape, 2),
      numeric,
      { atol: 1e-7, rtol: 1e-6 },
      "fd",
    );
  });

  it("rejects non-4-D input, naming the op and shape", async () => {
    const x = await upload([1, 2, 3], [3]);
    expect(() => upsampleNearest(x)).toThrow(/upsampleNearest: expects \[N, C, H, W\] \(x: \[3\]\)/);
  });
});

describe("permute and reshape", () => {
  it.each([
    [[1], [0]],
    [
      [2, 3],
      [1, 0],
    ],
    [
      [2, 5, 3, 7],
      [0, 2, 1, 3],
    ],
    [
      [3, 1, 4, 2, 5],
      [4, 2, 0, 3, 1],
    ],
    [
      [2, 4096, 5, 64],
      [0, 2, 1, 3],
    ],
  ])(
    "permute %j by %j matches the reference; its gradient is the inverse permutation",
    async (shape, permutation) => {
      const size = shape.reduce((a, b) => a * b, 1);
      const xValues = randomValues(size, 31);
      const x = await upload(xValues, shape, true);
      const y = permute(x, permutation);
      expect(y.shape).toEqual(permutation.map((axis) => shape[axis]));
      expectClose(await y.download(), layoutReference.permute(xValues, shape, permutation), exact, "permute");
      const gy = randomValues(size, 32);
      backward(y, await upload(gy, y.shape));
      const inverse = permutation.map((_, index) => permutation.indexOf(index));
      expectClose(
        await x.grad!.download(),
        layoutReference.permute(gy, y.shape, inverse),
        exact,
        "permute backward",
      );
    },
  );

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
});
