/**
 * add, sub, mul, div (ops/binary/) as checkOp tables: equal shapes through both variants, broadcast
 * shapes through the broadcast variant, both gradients against the float64 reference and by finite
 * differences, bad input; then gradient shapes, the variant choice and the dump.
 */
import { add, type BinaryKind, backward, binary, div, mul, sub, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import {
  BINARY_KERNELS,
  BINARY_VARIANTS,
  type BinaryVariant,
  chooseBinaryVariant,
} from "../../packages/kernels/src/ops/binary/index.ts";
import { type BinaryParams, binaryOpReference } from "../../packages/kernels/src/ops/binary/reference.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { type BadInputCase, checkOp, type OpCase, type OpUnderTest } from "./check-op.ts";
import { compiledWhile } from "./compiled.ts";
import { randomValues, upload } from "./helpers.ts";

const kinds: BinaryKind[] = ["add", "sub", "mul", "div"];
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
/** Keeps divisors away from zero so float32 quotients stay well conditioned. */
const safe = (values: Float64Array) =>
  values.map((value) => Math.fround(Math.sign(value || 1) * (0.5 + Math.abs(value))));

function pair(
  kind: BinaryKind,
  reason: string,
  aShape: number[],
  bShape: number[],
  finiteDifferences = false,
): OpCase<BinaryParams> {
  const seeds = finiteDifferences ? [8, 9] : [3, 4];
  return {
    reason,
    params: { kind, aShape, bShape },
    inputs: [aShape, bShape],
    values: [
      Array.from(randomValues(size(aShape), seeds[0])),
      Array.from(safe(randomValues(size(bShape), seeds[1]))),
    ],
    finiteDifferences,
  };
}

const broadcastFailure = (kind: BinaryKind): BadInputCase => ({
  reason: `${kind}: shapes that do not broadcast name the op and both shapes`,
  run: (device) =>
    binary(
      kind,
      Tensor.upload(device, randomValues(6, 1), [2, 3]),
      Tensor.upload(device, randomValues(4, 2), [4]),
    ),
  throws: `${kind}: shapes cannot be broadcast together (axis 1: 3 vs 4) (a: [2, 3], b: [4])`,
});
const otherBadInputs: BadInputCase[] = [
  {
    reason: "the flat variant forced on broadcast shapes",
    run: (device) =>
      binary(
        "mul",
        Tensor.upload(device, randomValues(6, 1), [2, 3]),
        Tensor.upload(device, [1, 2, 3], [3]),
        {
          variant: "flat",
        },
      ),
    throws: `mul: variant "flat" needs both inputs of the output's shape (a: [2, 3], b: [3])`,
  },
  {
    reason: "a u32 input",
    run: (device) => add(Tensor.upload(device, [1, 2], [2]), Tensor.upload(device, [1, 2], [2], "u32")),
    throws: "add: needs f32 inputs, b is u32 (a: [2], b: [2])",
  },
];

for (const kind of kinds) {
  const op = (variants: readonly BinaryVariant[]): OpUnderTest<BinaryParams, BinaryVariant> => ({
    name: `binary ${kind}`,
    variants,
    reference: binaryOpReference,
    run: ([a, b], _params, variant) => binary(kind, a, b, { variant }),
    // Gradients of broadcast inputs sum up to 162 (2 x 9 x 9) products in f32.
    tolerance: () => ({ forward: { atol: 1e-6, rtol: 1e-6 }, backward: { atol: 1e-4, rtol: 1e-4 } }),
  });
  checkOp(op(BINARY_VARIANTS), [
    pair(kind, "equal shapes [1] and [1]", [1], [1]),
    pair(kind, "equal odd shapes [7] and [7]", [7], [7]),
  ]);
  checkOp(
    op(["broadcast"]),
    [
      pair(kind, "a trailing vector [3, 5] and [5]", [3, 5], [5]),
      pair(kind, "a per-channel bias [2, 320, 9, 9] and [1, 320, 1, 1]", [2, 320, 9, 9], [1, 320, 1, 1]),
      pair(kind, "both inputs expand [4, 1, 6] and [1, 3, 1]", [4, 1, 6], [1, 3, 1]),
      pair(kind, "a scalar [5, 1] and [1]", [5, 1], [1]),
      pair(kind, "a leading axis [1, 77, 1024] and [77, 1024]", [1, 77, 1024], [77, 1024]),
      pair(kind, "small, for finite differences", [2, 3], [3], true),
    ],
    [broadcastFailure(kind), ...(kind === "add" ? otherBadInputs : [])],
  );
}

describe("binary: the rest", () => {
  it("gradients come back in each input's shape", async () => {
    for (const f of [add, sub, mul, div]) {
      const a = await upload(randomValues(2 * 320 * 9 * 9, 3), [2, 320, 9, 9], true);
      const b = await upload(randomValues(320, 4), [1, 320, 1, 1], true);
      const y = f(a, b);
      backward(y, await upload(randomValues(y.size, 5), y.shape));
      expect(a.grad!.shape).toEqual([2, 320, 9, 9]);
      expect(b.grad!.shape).toEqual([1, 320, 1, 1]);
      for (const tensor of [a, b, y]) tensor.release();
    }
  });

  it("chooses flat only when both inputs have the output's size (no GPU needed)", () => {
    expect(chooseBinaryVariant(7, 7, 7)).toBe("flat");
    expect(chooseBinaryVariant(15, 5, 15)).toBe("broadcast");
    expect(chooseBinaryVariant(1, 6, 6)).toBe("broadcast");
    expect(chooseBinaryVariant(1, 1, 1)).toBe("flat");
  });

  it.each(kinds)("%s: the WGSL that `cxr kernels dump binary` prints is what runs", async (kind) => {
    const compiled = await compiledWhile(async (device) => {
      const a = Tensor.upload(device, [1, 2, 3, 4, 5, 6], [2, 3]);
      const b = Tensor.upload(device, [1, 2, 3], [3]);
      for (const y of [binary(kind, a, a), binary(kind, a, b)]) {
        await y.download();
        y.release();
      }
    });
    expect(compiled).toEqual([BINARY_KERNELS.flat[kind], BINARY_KERNELS.broadcast[kind]]);
    expect(dumpKernelSources({ op: "binary", variant: "broadcast", pass: kind })).toBe(
      `// binary / broadcast / ${kind}${BINARY_KERNELS.broadcast[kind]}\n`,
    );
  });
});
