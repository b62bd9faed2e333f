import {
  backward,
  OpError,
  SOFTMAX_VARIANTS,
  type SoftmaxVariant,
  softmax,
  softmaxReference,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

// f32 exp2 and the online rescaling lose a few ulps per element; outputs are probabilities <= 1.
const FORWARD_TOLERANCE = { atol: 1e-6, rtol: 2e-5 };
// The backward sums dy * y over the row in f32: error grows with the row length.
const backwardTolerance = (length: number) => ({ atol: 2e-6 * Math.sqrt(length), rtol: 5e-5 });

interface SoftmaxCase {
  shape: number[];
  axis: number;
  scale?: number;
}

const CASES: SoftmaxCase[] = [
  { shape: [1], axis: -1 },
  { shape: [3, 1], axis: -1 },
  { shape: [5, 7], axis: -1 },
  { shape: [2, 3, 77], axis: -1, scale: 0.125 },
  { shape: [4, 1025], axis: 1 },
  { shape: [3, 5000], axis: -1 },
  { shape: [2, 9, 3], axis: 1 },
  { shape: [6, 4, 5], axis: 0, scale: 2 },
];

async function checkAgainstReference(
  { shape, axis, scale }: SoftmaxCase,
  variant: SoftmaxVariant,
  maskValues?: Float64Array,
) {
  const size = shape.reduce((a, b) => a * b, 1);
  const length = shape.at(axis)!;
  // Spread of +-24: large enough that an unstable exp(x) without the max shift would overflow at scale 2.
  const x = asFloat32(randomValues(size, 3 + size, 8));
  const gy = asFloat32(randomValues(size, 41 + size));
  const xTensor = await upload(x, shape, true);
  const maskTensor = maskValues ? await upload(maskValues, [shape[0], length]) : undefined;
  const y = softmax(xTensor, axis, { scale, variant, mask: maskTensor });
  const expected = softmaxReference.forward(x, shape, axis, { scale, mask: maskValues });
  expectClose(await y.download(), expected, FORWARD_TOLERANCE, `softmax ${variant} forward`);
  backward(y, await upload(gy, shape));
  expectClose(
    await xTensor.grad!.download(),
    softmaxReference.backward(expected, gy, shape, axis, { scale }),
    backwardTolerance(length),
    `softmax ${variant} backward`,
  );
  xTensor.release();
  y.release();
  maskTensor?.release();
}

describe.each(SOFTMAX_VARIANTS)("softmax variant %s", (variant) => {
  it.each(CASES)("matches the float64 reference forward and backward: %j", async (testCase) => {
    await checkAgainstReference(testCase, variant);
  });

  it("applies a per-batch mask; a fully masked row is zeros", async () => {
    const shape = [3, 4, 9];
    const mask = new Float64Array(3 * 9).fill(1);
    for (const j of [0, 4, 8]) mask[j] = 0; // batch 0: some entries dropped
    for (let j = 0; j < 9; j++) mask[2 * 9 + j] = 0; // batch 2: everything dropped
    await checkAgainstReference({ shape, axis: -1, scale: 0.5 }, variant, mask);
    const x = await upload(randomValues(3 * 4 * 9, 8), shape);
    const y = await softmax(x, -1, { variant, mask: await upload(mask, [3, 9]) }).download();
    expect(Array.from(y.subarray(2 * 36)).every((value) => value === 0)).toBe(true);
    expect(y[0]).toBe(0);
  });

  it("is stable for huge inputs", async () => {
    const x = await upload([1e30, 1e30, -1e30, 3e38], [1, 4]);
    const y = await softmax(x, -1, { variant }).download();
    expectClose(y, [0, 0, 0, 1], FORWARD_TOLERANCE, "huge inputs");
  });
});

describe("softmax reference", () => {
  it.each([
    [[4, 6], -1],
    [[3, 4, 2], 1],
  ])("gradient agrees with finite differences for shape %j axis %d", (shape, axis) => {
    const size = (shape as number[]).reduce((a, b) => a * b, 1);
    const x = randomValues(size, 17, 2);
    const gy = randomValues(size, 18);
    const forward = ([input]: Float64Array[]) =>
      softmaxReference.forward(input, shape as number[], axis as number, { scale: 0.7 });
    const numeric = finiteDifferenceGradient(forward, [x], gy, 0);
    const analytic = softmaxReference.backward(forward([x]), gy, shape as number[], axis as number, {
      scale: 0.7,
    });
    expectClose(analytic, numeric, { atol: 1e-8, rtol: 1e-6 }, "softmax fd");
  });
});

describe("softmax bad input", () => {
  it("rejects an axis out of range, a wrong mask and f16", async () => {
    const x = await upload(randomValues(12, 1), [3, 4]);
    expect(() => softmax(x, 2)).toThrow(OpError);
    expect(() => softmax(x, 2)).toThrow("softmax: axis 2 is out of range for a rank-2 tensor (x: [3, 4])");
    const badMask = await upload([1, 1, 1], [1, 3]);
    expect(() => softmax(x, -1, { mask: badMask })).toThrow(
      "softmax: mask must be [x.shape[0], length of the softmax axis] (x: [3, 4], mask: [1, 3])",
    );
    const mask = await upload(new Float64Array(12).fill(1), [3, 4]);
    expect(() => softmax(x, 0, { mask })).toThrow("softmax: a mask needs the softmax over the last axis");
    expect(() => softmax(x, -1, { scale: Number.NaN })).toThrow("softmax: scale must be finite, got NaN");
    const device = await gpu();
    if (device.features.has("shader-f16")) {
      const half = Tensor.upload(device, [1, 2], [2], "f16");
      expect(() => softmax(half)).toThrow("softmax: needs f32 input, got f16 (x: [2])");
    }
  });
});
