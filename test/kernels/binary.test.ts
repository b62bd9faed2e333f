import {
  add,
  type BinaryKind,
  backward,
  binary,
  binaryReference,
  div,
  mul,
  OpError,
  sub,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { expectClose, finiteDifferenceGradient, randomValues, upload } from "./helpers.ts";

const kinds: BinaryKind[] = ["add", "sub", "mul", "div"];
const shapePairs: [number[], number[]][] = [
  [[1], [1]],
  [[7], [7]],
  [[3, 5], [5]],
  [
    [2, 320, 9, 9],
    [1, 320, 1, 1],
  ],
  [
    [4, 1, 6],
    [1, 3, 1],
  ],
  [[5, 1], [1]],
  [
    [1, 77, 1024],
    [77, 1024],
  ],
];
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
/** Keeps divisors away from zero so float32 quotients stay well conditioned. */
const safe = (values: Float64Array) =>
  values.map((value) => Math.fround(Math.sign(value || 1) * (0.5 + Math.abs(value))));

describe.each(kinds)("binary %s with broadcasting", (kind) => {
  it.each(shapePairs)(
    "a %j, b %j: forward and both gradients match the reference",
    async (aShape, bShape) => {
      const aValues = randomValues(size(aShape), 3);
      const bValues = safe(randomValues(size(bShape), 4));
      const a = await upload(aValues, aShape, true);
      const b = await upload(bValues, bShape, true);
      const y = binary(kind, a, b);
      expectClose(
        await y.download(),
        binaryReference.forward(kind, aValues, aShape, bValues, bShape),
        { atol: 1e-6, rtol: 1e-6 },
        "forward",
      );
      const gy = randomValues(y.size, 5);
      backward(y, await upload(gy, y.shape));
      const [gradA, gradB] = binaryReference.backward(kind, aValues, aShape, bValues, bShape, gy);
      expect(a.grad!.shape).toEqual(aShape);
      expect(b.grad!.shape).toEqual(bShape);
      const tolerance = { atol: 1e-4, rtol: 1e-4 };
      expectClose(await a.grad!.download(), gradA, tolerance, "grad a");
      expectClose(await b.grad!.download(), gradB, tolerance, "grad b");
    },
  );

  it("reference gradients agree with finite differences", () => {
    const aShape = [2, 3];
    const bShape = [3];
    const a = randomValues(6, 8);
    const b = safe(randomValues(3, 9));
    const gy = randomValues(6, 10);
    const f = ([x, y]: Float64Array[]) => binaryReference.forward(kind, x, aShape, y, bShape);
    const [gradA, gradB] = binaryReference.backward(kind, a, aShape, b, bShape, gy);
    expectClose(gradA, finiteDifferenceGradient(f, [a, b], gy, 0), { atol: 1e-6, rtol: 1e-6 }, "fd a");
    expectClose(gradB, finiteDifferenceGradient(f, [a, b], gy, 1), { atol: 1e-6, rtol: 1e-6 }, "fd b");
  });
});

describe("binary bad input", () => {
  it("names the op and both shapes when broadcasting fails", async () => {
    const a = await upload(randomValues(6, 1), [2, 3]);
    const b = await upload(randomValues(4, 2), [4]);
    expect(() => add(a, b)).toThrow(OpError);
    expect(() => mul(a, b)).toThrow(
      /mul: shapes cannot be broadcast together \(axis 1: 3 vs 4\) \(a: \[2, 3\], b: \[4\]\)/,
    );
    expect(() => sub(a, b)).toThrow(/^sub: /);
    expect(() => div(a, b)).toThrow(/^div: /);
  });
});
