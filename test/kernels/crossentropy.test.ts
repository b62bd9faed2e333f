/**
 * softmaxCrossEntropy: forward and backward against the float64 reference over awkward shapes (one
 * row, one class, odd sizes, thousands of rows, large logits), masks (none, partial, weights, every
 * row masked), and the reference gradient checked by central finite differences.
 */
import { backward, OpError, softmaxCrossEntropy, softmaxCrossEntropyReference, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

type MaskKind = "ones" | "partial" | "weights" | "all";

function maskOf(kind: MaskKind, rows: number, seed: number): Float64Array {
  if (kind === "ones") return new Float64Array(rows).fill(1);
  if (kind === "all") return new Float64Array(rows);
  const random = randomValues(rows, seed);
  return random.map((value) => (kind === "partial" ? (value > 0 ? 1 : 0) : Math.fround(Math.abs(value))));
}

function targetsOf(rows: number, classes: number, seed: number): number[] {
  return Array.from(randomValues(rows, seed), (value) => Math.floor(Math.abs(value) * 1000) % classes);
}

const CASES: [rows: number, classes: number, scale: number][] = [
  [1, 1, 1],
  [1, 4, 1],
  [3, 4, 1],
  [17, 5, 3],
  [64, 4, 1],
  [257, 7, 1],
  [5000, 4, 2],
  [6, 3, 40], // large logits: the max shift must keep exp() finite
];

describe("softmaxCrossEntropy", () => {
  it.each(CASES)(
    "rows %i, classes %i, logit scale %f: forward and backward match the reference",
    async (rows, classes, scale) => {
      for (const kind of ["ones", "partial", "weights", "all"] as MaskKind[]) {
        const logits = asFloat32(randomValues(rows * classes, rows * 31 + classes, scale));
        const targets = targetsOf(rows, classes, rows + 3);
        const mask = maskOf(kind, rows, rows + 5);
        const logitsTensor = await upload(logits, [rows, classes], true);
        const targetTensor = Tensor.upload(await gpu(), targets, [rows], "u32");
        const maskTensor = await upload(mask, [rows]);
        const loss = softmaxCrossEntropy(logitsTensor, targetTensor, maskTensor);
        expect(loss.shape).toEqual([1]);
        expectClose(
          await loss.download(),
          [softmaxCrossEntropyReference.forward(logits, classes, targets, mask)],
          { atol: 1e-6, rtol: 1e-5 },
          `loss (${kind})`,
        );
        backward(loss, await upload([0.75], [1]));
        expectClose(
          await logitsTensor.grad!.download(),
          softmaxCrossEntropyReference.backward(logits, classes, targets, mask, 0.75),
          { atol: 1e-7, rtol: 1e-5 },
          `d logits (${kind})`,
        );
        for (const tensor of [logitsTensor, targetTensor, maskTensor, loss]) tensor.release();
      }
    },
  );

  it("the reference gradient agrees with finite differences of the reference loss", () => {
    for (const [rows, classes] of [
      [1, 3],
      [5, 4],
      [9, 2],
    ]) {
      const logits = randomValues(rows * classes, rows * 7 + classes);
      const targets = targetsOf(rows, classes, rows);
      const mask = maskOf("weights", rows, rows + 1);
      const numeric = finiteDifferenceGradient(
        ([z]) => Float64Array.of(softmaxCrossEntropyReference.forward(z, classes, targets, mask)),
        [logits],
        Float64Array.of(1.3),
        0,
      );
      expectClose(
        softmaxCrossEntropyReference.backward(logits, classes, targets, mask, 1.3),
        numeric,
        { atol: 1e-7, rtol: 1e-6 },
        `finite differences ${rows}x${classes}`,
      );
    }
  });

  it("names the op and shapes for bad operands", async () => {
    const g = await gpu();
    const logits = Tensor.upload(g, new Float32Array(12), [3, 4]);
    const targets = Tensor.upload(g, [0, 1, 2], [3], "u32");
    const mask = Tensor.upload(g, [1, 1, 1], [3]);
    expect(() => softmaxCrossEntropy(logits, Tensor.upload(g, [0, 1], [2], "u32"), mask)).toThrow(OpError);
    expect(() => softmaxCrossEntropy(logits, Tensor.upload(g, [0, 1, 2], [3]), mask)).toThrow(
      /softmaxCrossEntropy: needs u32 class indices, got f32/,
    );
    expect(() => softmaxCrossEntropy(Tensor.upload(g, new Float32Array(12), [12]), targets, mask)).toThrow(
      /needs logits of shape \[rows, classes\] \(logits: \[12\]/,
    );
  });
});
