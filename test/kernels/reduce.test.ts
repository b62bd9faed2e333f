import {
  backward,
  max,
  mean,
  noGrad,
  OpError,
  type ReductionKind,
  reduce,
  reduceReference,
  sum,
  sumToShape,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

const KINDS: ReductionKind[] = ["sum", "mean", "max"];

interface Case {
  shape: number[];
  axes?: number[];
  keepDims?: boolean;
}

const CASES: Case[] = [
  { shape: [1] },
  { shape: [7], axes: [0] },
  { shape: [3, 4, 5], axes: [1] }, // middle axis
  { shape: [3, 4, 5], axes: [-1], keepDims: true }, // last axis, negative index
  { shape: [3, 4, 5], axes: [0, 2] }, // axes that are not adjacent: two blocks, two passes
  { shape: [2, 1, 3], axes: [1] }, // only a size-1 axis: nothing to reduce
  { shape: [2, 3, 4, 5], axes: [0, 2, 3], keepDims: true }, // the [C] statistics of an NCHW tensor
  { shape: [5, 300, 7], axes: [1] }, // long strided reduction: split into chunks and finished
  { shape: [100003] }, // everything, odd length: three passes
  { shape: [64, 4096], axes: [1] },
  { shape: [4096, 33], axes: [0] },
];

function caseSize(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Sums of `count` standard-normal values have magnitude ~ sqrt(count) (means ~ 1 / sqrt(count));
 * chunked f32 sums stay within ~1e-7 of that magnitude (measured), so allow 1e-6 of it. Max is exact.
 */
function tolerance(kind: ReductionKind, count: number) {
  if (kind === "max") return { atol: 0, rtol: 0 };
  const magnitude = kind === "sum" ? Math.sqrt(count) : 1 / Math.sqrt(count);
  return { atol: 1e-6 * magnitude + 1e-8, rtol: 1e-6 };
}

describe.each(KINDS)("%s", (kind) => {
  it.each(CASES)(
    "forward and backward match the float64 reference: %j",
    async ({ shape, axes, keepDims }) => {
      const size = caseSize(shape);
      const x = asFloat32(randomValues(size, 3 + size));
      const xTensor = await upload(x, shape, true);
      const y = reduce(kind, xTensor, axes, { keepDims });
      const expected = reduceReference.forward(kind, x, shape, axes, keepDims);
      expect(y.shape).toEqual(expected.shape);
      const count = size / expected.values.length;
      expectClose(await y.download(), expected.values, tolerance(kind, count), `${kind} forward`);
      const gradOutput = asFloat32(randomValues(expected.values.length, 7 + size));
      backward(y, await upload(gradOutput, y.shape));
      expectClose(
        await xTensor.grad!.download(),
        reduceReference.backward(kind, x, shape, gradOutput, axes),
        { atol: 0, rtol: 1e-6 },
        `${kind} backward`,
      );
      xTensor.release();
      y.release();
    },
  );
});

describe("max gradient", () => {
  it("goes to the first maximum in row-major order when values tie, also across passes", async () => {
    // Row 0: maxima at 1 and 3; row 1: every value equal; the long row splits into chunks.
    const long = new Float64Array(5000).fill(-1);
    long[1234] = 9;
    long[4321] = 9;
    const cases: [number[], number[], number[]][] = [
      [
        [2, 4],
        [0, 5, 1, 5, 1, 1, 1, 1],
        [1, 4],
      ],
      [[1, 5000], Array.from(long), [1234]],
    ];
    for (const [shape, values, winners] of cases) {
      const x = await upload(values, shape, true);
      const y = max(x, 1);
      backward(y, await upload(new Array(shape[0]).fill(1), [shape[0]]));
      const grad = await x.grad!.download();
      const expected = new Float64Array(values.length);
      winners.forEach((flat) => {
        expected[flat] = 1;
      });
      expect(Array.from(grad)).toEqual(Array.from(expected));
    }
  });

  it("over several axes picks the first maximum of the combined axes", async () => {
    // Reduce axes 0 and 2 of [2, 2, 3]: output j collects x[a, j, c]; equal maxima at (0, j, 2) and (1, j, 0).
    const values = [0, 0, 4, 1, 1, 1, 4, 0, 0, 2, 2, 2];
    const x = await upload(values, [2, 2, 3], true);
    const y = max(x, [0, 2]);
    expect(Array.from(await y.download())).toEqual([4, 2]);
    backward(y, await upload([1, 1], [2]));
    const expected = reduceReference.backward(
      "max",
      Float64Array.from(values),
      [2, 2, 3],
      Float64Array.of(1, 1),
      [0, 2],
    );
    expect(Array.from(await x.grad!.download())).toEqual(Array.from(expected));
    expect(expected[2]).toBe(1); // (0, 0, 2) comes before (1, 0, 0)
  });
});

describe("sumToShape", () => {
  const CASES_TO_SHAPE: [number[], number[]][] = [
    [
      [2, 3, 4],
      [3, 4],
    ], // leading axis broadcast
    [
      [2, 3, 4],
      [1, 3, 1],
    ], // size-1 axes broadcast
    [[2, 3, 4], [4]],
    [[2, 3, 4], [1]],
    [[5, 1], [1]],
    [
      [2, 3, 4],
      [2, 3, 4],
    ], // nothing to reduce: still a new tensor
    [
      [2, 320, 16, 16],
      [320, 1, 1],
    ], // a conv bias broadcast over NCHW
  ];

  it.each(CASES_TO_SHAPE)("sums [%j] down to [%j], backward broadcasts back", async (shape, target) => {
    const size = caseSize(shape);
    const x = asFloat32(randomValues(size, 11 + size));
    const xTensor = await upload(x, shape, true);
    const y = sumToShape(xTensor, target);
    expect(y.shape).toEqual(target);
    expect(y).not.toBe(xTensor);
    expect(y.buffer).not.toBe(xTensor.buffer);
    const expected = reduceReference.sumToShape(x, shape, target);
    expectClose(await y.download(), expected, { atol: 1e-5, rtol: 1e-5 }, "sumToShape forward");
    const gradOutput = asFloat32(randomValues(caseSize(target), 13));
    backward(y, await upload(gradOutput, target));
    const axes = shape
      .map((extent, axis) => {
        const wanted = target[axis - (shape.length - target.length)];
        return axis < shape.length - target.length || (wanted === 1 && extent !== 1) ? axis : -1;
      })
      .filter((axis) => axis >= 0);
    expectClose(
      await xTensor.grad!.download(),
      reduceReference.backward("sum", x, shape, gradOutput, axes),
      { atol: 0, rtol: 0 },
      "sumToShape backward",
    );
  });

  it("leaves its input usable after the input is released (callers own the result)", async () => {
    const x = await upload([1, 2, 3, 4], [2, 2]);
    const y = sumToShape(x, [2, 2]);
    x.release();
    expect(Array.from(await y.download())).toEqual([1, 2, 3, 4]);
  });
});

describe("reduction references", () => {
  it.each(["sum", "mean"] as ReductionKind[])("%s backward agrees with finite differences", (kind) => {
    const shape = [3, 4, 5];
    const axes = [0, 2];
    const x = randomValues(60, 17);
    const gradOutput = randomValues(4, 18);
    const numeric = finiteDifferenceGradient(
      ([input]) => reduceReference.forward(kind, input, shape, axes).values,
      [x],
      gradOutput,
      0,
    );
    expectClose(
      reduceReference.backward(kind, x, shape, gradOutput, axes),
      numeric,
      { atol: 1e-7, rtol: 1e-6 },
      kind,
    );
  });

  it("max backward agrees with finite differences away from ties", () => {
    const shape = [4, 6];
    const x = randomValues(24, 19); // continuous values: no ties
    const gradOutput = randomValues(4, 20);
    const numeric = finiteDifferenceGradient(
      ([input]) => reduceReference.forward("max", input, shape, [1]).values,
      [x],
      gradOutput,
      0,
    );
    expectClose(
      reduceReference.backward("max", x, shape, gradOutput, [1]),
      numeric,
      { atol: 1e-7, rtol: 1e-6 },
      "max",
    );
  });
});

describe("reduction bad input", () => {
  it("names the op and the shapes", async () => {
    const x = await upload(randomValues(24, 1), [2, 3, 4]);
    expect(() => sum(x, 3)).toThrow(OpError);
    expect(() => sum(x, 3)).toThrow("sum: axis 3 is out of range for rank 3 (x: [2, 3, 4])");
    expect(() => mean(x, [1, -2])).toThrow("mean: axis -2 is listed twice (x: [2, 3, 4])");
    expect(() => max(x, [0.5])).toThrow(/^max: axis 0.5 is out of range/);
    expect(() => sumToShape(x, [2, 4])).toThrow(
      "sumToShape: axis 1 has 3 elements, which cannot sum to 2 (x: [2, 3, 4], shape: [2, 4])",
    );
    expect(() => sumToShape(x, [1, 2, 3, 4])).toThrow(
      "sumToShape: the target shape has more axes than the tensor (x: [2, 3, 4], shape: [1, 2, 3, 4])",
    );
    const nine = await upload(new Float64Array(512), [2, 2, 2, 2, 2, 2, 2, 2, 2]);
    expect(() => sum(nine, [0, 2, 4, 6, 8])).toThrow(
      /^sum: axes \[0, 2, 4, 6, 8\] alternate too often \(9 runs/,
    );
    const device = await gpu();
    if (device.features.has("shader-f16")) {
      const half = Tensor.upload(device, new Float32Array(24), [2, 3, 4], "f16");
      expect(() => sum(half)).toThrow("sum: needs f32 x, got f16 (x: [2, 3, 4])");
    }
  });

  it("records nothing under noGrad and keeps no argmax buffer", async () => {
    const x = await upload([3, 1, 2], [3], true);
    const y = noGrad(() => max(x));
    expect(y.node).toBeNull();
    expect(Array.from(await y.download())).toEqual([3]);
  });
});
