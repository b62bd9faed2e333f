import {
  avgPool2d,
  backward,
  globalAvgPool2d,
  maxPool2d,
  type Pool2dOptions,
  poolReference,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { expectClose, finiteDifferenceGradient, randomValues, upload } from "./helpers.ts";

const tolerance = { atol: 1e-5, rtol: 1e-5 };
const cases: [string, number[], Pool2dOptions][] = [
  ["1x1 kernel", [1, 1, 1, 1], { kernel: 1 }],
  ["2x2 stride 2 (DenseNet transition)", [2, 3, 8, 8], { kernel: 2 }],
  ["odd input, 2x2 stride 2", [1, 2, 7, 5], { kernel: 2 }],
  ["3x3 stride 2 pad 1 (DenseNet stem)", [2, 4, 17, 13], { kernel: 3, stride: 2, padding: 1 }],
  ["overlapping 3x3 stride 1", [1, 3, 6, 6], { kernel: 3, stride: 1, padding: 1 }],
  ["rectangular kernel", [1, 2, 9, 10], { kernel: [3, 2], stride: [2, 3], padding: [1, 0] }],
  ["large", [4, 64, 56, 56], { kernel: 3, stride: 2, padding: 1 }],
];

describe.each(["avg", "max"] as const)("%s pooling", (kind) => {
  const op = kind === "avg" ? avgPool2d : maxPool2d;
  it.each(cases)("%s: forward and backward match the reference", async (_name, shape, options) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const xValues = randomValues(size, size + 3);
    const x = await upload(xValues, shape, true);
    const y = op(x, options);
    expectClose(
      await y.download(),
      poolReference.forward(kind, xValues, shape, options),
      tolerance,
      "forward",
    );
    const gy = randomValues(y.size, 7);
    backward(y, await upload(gy, y.shape));
    expectClose(
      await x.grad!.download(),
      poolReference.backward(kind, xValues, shape, options, gy),
      tolerance,
      "backward",
    );
  });

  it("reference backward agrees with finite differences", () => {
    const shape = [1, 2, 5, 5];
    const options: Pool2dOptions = { kernel: 3, stride: 2, padding: 1 };
    const x = randomValues(50, 8);
    const gy = randomValues(2 * 3 * 3, 9);
    const numeric = finiteDifferenceGradient(
      ([input]) => poolReference.forward(kind, input, shape, options),
      [x],
      gy,
      0,
    );
    expectClose(
      poolReference.backward(kind, x, shape, options, gy),
      numeric,
      { atol: 1e-7, rtol: 1e-6 },
      "fd",
    );
  });
});

describe("globalAvgPool2d", () => {
  it.each([[[1, 1, 1, 1]], [[3, 5, 7, 2]], [[16, 1024, 2, 2]]])(
    "shape %j gives [N, C] means and spreads the gradient evenly",
    async (shape) => {
      const size = shape.reduce((a, b) => a * b, 1);
      const xValues = randomValues(size, 21);
      const x = await upload(xValues, shape, true);
      const y = globalAvgPool2d(x);
      expect(y.shape).toEqual([shape[0], shape[1]]);
      const options = { kernel: [shape[2], shape[3]] as [number, number] };
      expectClose(
        await y.download(),
        poolReference.forward("avg", xValues, shape, options),
        tolerance,
        "forward",
      );
      const gy = randomValues(y.size, 22);
      backward(y, await upload(gy, y.shape));
      expectClose(
        await x.grad!.download(),
        poolReference.backward("avg", xValues, shape, options, gy),
        tolerance,
        "backward",
      );
    },
  );
});

describe("pooling bad input", () => {
  it("names the op and shape", async () => {
    const x = await upload(randomValues(12, 1), [1, 1, 3, 4]);
    expect(() => maxPool2d(x, { kernel: 5 })).toThrow(
      /maxPool2d: kernel 5x5 is larger than the padded input \(x: \[1, 1, 3, 4\]\)/,
    );
    expect(() => avgPool2d(x, { kernel: 2, padding: 2 })).toThrow(
      /avgPool2d: padding \(2, 2\) must be between 0 and half/,
    );
    const flat = await upload([1, 2], [2]);
    expect(() => globalAvgPool2d(flat)).toThrow(/globalAvgPool2d: expects \[N, C, H, W\] \(x: \[2\]\)/);
  });
});
