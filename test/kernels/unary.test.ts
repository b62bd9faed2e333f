import { add, backward, noGrad, UNARY_FUNCTIONS, type UnaryKind, unary, unaryReference } from "@cxr/kernels";
import { describe, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, randomValues, upload } from "./helpers.ts";

const kinds = Object.keys(UNARY_FUNCTIONS) as UnaryKind[];
const shapes = [[1], [7], [3, 5, 17], [1025, 3], [70001]];

describe.each(kinds)("unary %s", (kind) => {
  const alpha = kind === "scale" ? -0.75 : 1;
  it.each(shapes)("forward and backward match the float64 reference, shape %j", async (...shape) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const x = asFloat32(randomValues(size, 11 + size, 3));
    const gy = asFloat32(randomValues(size, 97 + size));
    const xTensor = await upload(x, shape, true);
    const y = unary(kind, xTensor, alpha);
    const yValues = await y.download();
    expectClose(
      yValues,
      unaryReference.forward(kind, x, alpha),
      { atol: 2e-6, rtol: 2e-6 },
      `${kind} forward`,
    );
    backward(y, await upload(gy, shape));
    const gx = await xTensor.grad!.download();
    expectClose(
      gx,
      unaryReference.backward(kind, x, gy, alpha),
      { atol: 5e-6, rtol: 5e-6 },
      `${kind} backward`,
    );
    xTensor.release();
    y.release();
  });

  it("reference gradient agrees with finite differences", () => {
    // Away from ReLU's kink, where the derivative is undefined.
    const x = randomValues(40, 5, 2).map((value) => (Math.abs(value) < 1e-3 ? 0.5 : value));
    const gy = randomValues(40, 6);
    const numeric = finiteDifferenceGradient(
      ([input]) => unaryReference.forward(kind, input, alpha),
      [x],
      gy,
      0,
    );
    expectClose(
      unaryReference.backward(kind, x, gy, alpha),
      numeric,
      { atol: 1e-7, rtol: 1e-6 },
      `${kind} fd`,
    );
  });
});

describe("unary without gradients", () => {
  it("records nothing under noGrad", async () => {
    const x = await upload([1, -2, 3], [3], true);
    const y = noGrad(() => unary("relu", x));
    if (y.requiresGrad || y.node) throw new Error("noGrad recorded a node");
  });
});

describe("gradient accumulation", () => {
  it("adds the gradients of a tensor used twice (fan-out), and across backward calls", async () => {
    const x = await upload([1, -2, 3], [3], true);
    const y = unary("scale", unary("scale", x, 2), 1);
    const z = unary("scale", x, 3);
    backward(add(y, z), await upload([1, 1, 1], [3]));
    expectClose(await x.grad!.download(), [5, 5, 5], { atol: 0, rtol: 0 }, "fan-out");
    backward(unary("scale", x, 4), await upload([1, 1, 1], [3]));
    expectClose(await x.grad!.download(), [9, 9, 9], { atol: 0, rtol: 0 }, "accumulated across calls");
  });
});
