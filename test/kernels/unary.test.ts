/**
 * The pointwise activations (ops/unary/) as one checkOp table per function: forward and gradient
 * against the float64 reference over awkward shapes, the reference gradient against finite
 * differences, bad input; then noGrad, gradient accumulation and the dump.
 */
import { add, backward, noGrad, Tensor, UNARY_FUNCTIONS, type UnaryKind, unary } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { UNARY_KERNELS } from "../../packages/kernels/src/ops/unary/index.ts";
import { type UnaryParams, unaryOpReference } from "../../packages/kernels/src/ops/unary/reference.ts";
import { checkOp, type OpCase } from "./check-op.ts";
import { compiledWhile } from "./compiled.ts";
import { expectClose, randomValues, upload } from "./helpers.ts";

const kinds = Object.keys(UNARY_FUNCTIONS) as UnaryKind[];

for (const kind of kinds) {
  const params: UnaryParams = { kind, alpha: kind === "scale" ? -0.75 : 1 };
  const shaped = (reason: string, shape: number[]): OpCase<UnaryParams> => ({
    reason,
    params,
    inputs: [shape],
    spread: 3,
  });
  const cases: OpCase<UnaryParams>[] = [
    shaped("a single element", [1]),
    shaped("an odd size", [7]),
    shaped("rank 3, odd sizes", [3, 5, 17]),
    shaped("one past a power of two", [1025, 3]),
    shaped("large (several workgroup rows)", [70001]),
    {
      reason: "40 values away from ReLU's kink, for finite differences",
      params,
      inputs: [[40]],
      values: [Array.from(randomValues(40, 5, 2).map((value) => (Math.abs(value) < 1e-3 ? 0.5 : value)))],
      finiteDifferences: true,
    },
  ];
  checkOp(
    {
      name: `unary ${kind}`,
      variants: ["default"],
      reference: unaryOpReference,
      run: ([x], { alpha }) => unary(kind, x, alpha),
      // f32 exp and the A-S erf (1.5e-7) against float64.
      tolerance: () => ({ forward: { atol: 2e-6, rtol: 2e-6 }, backward: { atol: 5e-6, rtol: 5e-6 } }),
    },
    cases,
    [
      {
        reason: "u32 input",
        run: (device) => unary(kind, Tensor.upload(device, [1, 2], [2], "u32")),
        throws: `${kind}: needs f32 input, got u32 (x: [2])`,
      },
    ],
  );
}

describe("unary: the rest", () => {
  it("records nothing under noGrad", async () => {
    const x = await upload([1, -2, 3], [3], true);
    const y = noGrad(() => unary("relu", x));
    expect(y.requiresGrad).toBe(false);
    expect(y.node).toBeNull();
  });

  it("adds the gradients of a tensor used twice (fan-out), and across backward calls", async () => {
    const x = await upload([1, -2, 3], [3], true);
    const y = unary("scale", unary("scale", x, 2), 1);
    const z = unary("scale", x, 3);
    backward(add(y, z), await upload([1, 1, 1], [3]));
    expectClose(await x.grad!.download(), [5, 5, 5], { atol: 0, rtol: 0 }, "fan-out");
    backward(unary("scale", x, 4), await upload([1, 1, 1], [3]));
    expectClose(await x.grad!.download(), [9, 9, 9], { atol: 0, rtol: 0 }, "accumulated across calls");
  });

  it.each(kinds)("%s: the WGSL that `cxr kernels dump unary` prints is what runs", async (kind) => {
    const compiled = await compiledWhile(async (device) => {
      const x = Tensor.upload(device, [0.5, -1], [2]).trainable();
      const y = unary(kind, x, 2);
      backward(y, Tensor.upload(device, [1, 1], [2]));
      await x.grad!.download();
    });
    const kernels = UNARY_KERNELS.default;
    expect(compiled).toEqual([kernels[kind], kernels[`${kind}Backward`]]);
    expect(dumpKernelSources({ op: "unary", pass: `${kind}Backward` })).toBe(
      `// unary / default / ${kind}Backward${kernels[`${kind}Backward`]}\n`,
    );
  });
});
