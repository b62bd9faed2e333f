/**
 * softmaxCrossEntropy (ops/crossentropy/) as a checkOp table: forward and backward against the
 * float64 reference over awkward shapes (one row, one class, odd sizes, thousands of rows, large
 * logits) times masks (none, partial, weights, every row masked), the reference gradient by central
 * finite differences, bad input; then the dump.
 */
import { backward, softmaxCrossEntropy, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { CROSS_ENTROPY_KERNELS } from "../../packages/kernels/src/ops/crossentropy/index.ts";
import {
  type CrossEntropyParams,
  crossEntropyOpReference,
} from "../../packages/kernels/src/ops/crossentropy/reference.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { compiledWhile } from "./compiled.ts";
import { randomValues } from "./helpers.ts";

type MaskKind = "ones" | "partial" | "weights" | "all";

function maskOf(kind: MaskKind, rows: number, seed: number): number[] {
  if (kind === "ones") return new Array(rows).fill(1);
  if (kind === "all") return new Array(rows).fill(0);
  return Array.from(randomValues(rows, seed), (value) =>
    kind === "partial" ? (value > 0 ? 1 : 0) : Math.fround(Math.abs(value)),
  );
}

function targetsOf(rows: number, classes: number, seed: number): number[] {
  return Array.from(randomValues(rows, seed), (value) => Math.floor(Math.abs(value) * 1000) % classes);
}

function crossEntropyCase(
  rows: number,
  classes: number,
  spread: number,
  mask: MaskKind,
  why: string,
  finiteDifferences = false,
): OpCase<CrossEntropyParams> {
  return {
    reason: `${rows} x ${classes}, logit spread ${spread}, mask ${mask}: ${why}`,
    params: { classes, targets: targetsOf(rows, classes, rows + 3), mask: maskOf(mask, rows, rows + 5) },
    inputs: [[rows, classes]],
    spread,
    finiteDifferences,
  };
}

const SHAPES: [rows: number, classes: number, spread: number, why: string][] = [
  [1, 1, 1, "one row of one class (loss 0)"],
  [1, 4, 1, "one row"],
  [3, 4, 1, "a few rows"],
  [17, 5, 3, "odd sizes"],
  [64, 4, 1, "one full workgroup of rows"],
  [257, 7, 1, "one row past four workgroups"],
  [5000, 4, 2, "thousands of rows (a long sum)"],
  [6, 3, 40, "large logits: the max shift keeps exp() finite"],
];

const cases: OpCase<CrossEntropyParams>[] = [
  ...SHAPES.flatMap(([rows, classes, spread, why]) =>
    (["ones", "partial", "weights", "all"] as const).map((mask) =>
      crossEntropyCase(rows, classes, spread, mask, why),
    ),
  ),
  crossEntropyCase(1, 3, 1, "weights", "for finite differences", true),
  crossEntropyCase(5, 4, 1, "weights", "for finite differences", true),
  crossEntropyCase(9, 2, 1, "weights", "for finite differences", true),
];

function operands(device: Parameters<BadInputCase["run"]>[0]) {
  return {
    logits: Tensor.upload(device, new Float32Array(12), [3, 4]),
    targets: Tensor.upload(device, [0, 1, 2], [3], "u32"),
    mask: Tensor.upload(device, [1, 1, 1], [3]),
  };
}

const badInputs: BadInputCase[] = [
  {
    reason: "targets of the wrong length",
    run: (device) => {
      const { logits, mask } = operands(device);
      return softmaxCrossEntropy(logits, Tensor.upload(device, [0, 1], [2], "u32"), mask);
    },
    throws:
      "softmaxCrossEntropy: targets and mask need 3 values, one per row (logits: [3, 4], targets: [2], mask: [3])",
  },
  {
    reason: "f32 targets",
    run: (device) => {
      const { logits, mask } = operands(device);
      return softmaxCrossEntropy(logits, Tensor.upload(device, [0, 1, 2], [3]), mask);
    },
    throws: /^softmaxCrossEntropy: needs u32 class indices, got f32/,
  },
  {
    reason: "logits of rank 1",
    run: (device) => {
      const { targets, mask } = operands(device);
      return softmaxCrossEntropy(Tensor.upload(device, new Float32Array(12), [12]), targets, mask);
    },
    throws:
      "softmaxCrossEntropy: needs logits of shape [rows, classes] (logits: [12], targets: [3], mask: [3])",
  },
  {
    reason: "a u32 mask",
    run: (device) => {
      const { logits, targets } = operands(device);
      return softmaxCrossEntropy(logits, targets, Tensor.upload(device, [1, 1, 1], [3], "u32"));
    },
    throws: "softmaxCrossEntropy: needs an f32 mask, got u32",
  },
];

checkOp(
  {
    name: "softmaxCrossEntropy",
    variants: ["default"],
    reference: crossEntropyOpReference,
    run: ([logits], { targets, mask }, _variant, device) =>
      softmaxCrossEntropy(
        logits,
        Tensor.upload(device, targets, [targets.length], "u32"),
        Tensor.upload(device, mask, [mask.length]),
      ),
    // The loss sums up to 5000 f32 row losses; each gradient is one f32 softmax entry times a factor.
    tolerance: () => ({ forward: { atol: 1e-6, rtol: 1e-5 }, backward: { atol: 3e-7, rtol: 1e-5 } }),
  },
  cases,
  badInputs,
);

describe("softmaxCrossEntropy: the rest", () => {
  it("gives a [1] loss, and the WGSL that `cxr kernels dump crossentropy` prints is what runs", async () => {
    const compiled = await compiledWhile(async (device) => {
      const logits = Tensor.upload(device, randomValues(12, 1), [3, 4]).trainable();
      const loss = softmaxCrossEntropy(
        logits,
        Tensor.upload(device, [0, 1, 2], [3], "u32"),
        Tensor.upload(device, [1, 0, 1], [3]),
      );
      expect(loss.shape).toEqual([1]);
      backward(loss, Tensor.upload(device, [1], [1]));
      await logits.grad!.download();
    });
    const kernels = CROSS_ENTROPY_KERNELS.default;
    expect(compiled).toEqual([kernels.rows, kernels.sum, kernels.backward]);
    expect(dumpKernelSources({ op: "crossentropy", pass: "rows" })).toBe(
      `// crossentropy / default / rows${kernels.rows}\n`,
    );
  });

  it("writes the row statistics once (shared by the rows and backward passes)", () => {
    const kernels = CROSS_ENTROPY_KERNELS.default;
    for (const code of [kernels.rows, kernels.backward]) {
      expect(code.match(/exp\(logits\[base \+ k\] - largest\)/g)).toHaveLength(1);
      expect(code).toContain("let stats = rowStats(base);");
    }
  });
});
