import {
  backward,
  bceWithLogitsLoss,
  bceWithLogitsReference,
  type LossReduction,
  mseLoss,
  mseLossReference,
  noGrad,
  OpError,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

const REDUCTIONS: LossReduction[] = ["mean", "sum", "none"];
const SHAPES = [[1], [7], [3, 5, 17], [2, 4, 64, 64]]; // the last: a batch of 64x64 SD latents

function sizeOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

describe.each(REDUCTIONS)("mseLoss reduction %s", (reduction) => {
  it.each(SHAPES)(
    "forward and backward (both operands) match the float64 reference, shape %j",
    async (...shape) => {
      const size = sizeOf(shape);
      const prediction = asFloat32(randomValues(size, 3 + size));
      const target = asFloat32(randomValues(size, 5 + size));
      const predictionTensor = await upload(prediction, shape, true);
      const targetTensor = await upload(target, shape, true);
      const loss = mseLoss(predictionTensor, targetTensor, reduction);
      expect(loss.shape).toEqual(reduction === "none" ? shape : [1]);
      // A sum of `size` squares (~2 each) carries ~sqrt(size) ulps: 1e-6 relative with chunked sums.
      expectClose(
        await loss.download(),
        mseLossReference.forward(prediction, target, reduction),
        { atol: 1e-6, rtol: 2e-6 },
        `mse ${reduction} forward`,
      );
      const gradOutput = reduction === "none" ? asFloat32(randomValues(size, 7)) : Float64Array.of(0.75);
      backward(loss, await upload(gradOutput, loss.shape));
      const expected = mseLossReference.backward(prediction, target, gradOutput, reduction);
      const tolerance = { atol: 1e-7, rtol: 1e-6 };
      expectClose(
        await predictionTensor.grad!.download(),
        expected.gradPrediction,
        tolerance,
        "d prediction",
      );
      expectClose(await targetTensor.grad!.download(), expected.gradTarget, tolerance, "d target");
    },
  );
});

type MaskKind = "none" | "partial" | "weights" | "all";

function makeMask(kind: MaskKind, size: number, seed: number): Float64Array | null {
  if (kind === "none") return null;
  if (kind === "all") return new Float64Array(size); // every label uncertain
  const random = randomValues(size, seed);
  return kind === "partial"
    ? random.map((value) => (value > 0.3 ? 1 : 0))
    : random.map((value) => Math.abs(value));
}

describe.each(["none", "partial", "weights", "all"] as MaskKind[])(
  "bceWithLogitsLoss mask %s",
  (maskKind) => {
    // [16, 14]: a classifier batch over the 14 CheXpert labels; 70001: many chunks.
    it.each([[1], [14], [16, 14], [70001]])(
      "forward and backward match the float64 reference, shape %j",
      async (...shape) => {
        const size = sizeOf(shape);
        const logits = asFloat32(randomValues(size, 11 + size, 4));
        const targets = asFloat32(randomValues(size, 13 + size).map((value) => (value > 0 ? 1 : 0)));
        const mask = makeMask(maskKind, size, 17 + size);
        const logitsTensor = await upload(logits, shape, true);
        const targetsTensor = await upload(targets, shape, true);
        const loss = bceWithLogitsLoss(logitsTensor, targetsTensor, mask ? await upload(mask, shape) : null);
        expect(loss.shape).toEqual([1]);
        const expectedLoss = bceWithLogitsReference.forward(logits, targets, mask);
        const [value] = await loss.download();
        expect(Math.abs(value - expectedLoss)).toBeLessThanOrEqual(2e-6 * Math.abs(expectedLoss) + 1e-7);
        if (maskKind === "all") expect(value).toBe(0);
        backward(loss, await upload([1.5], [1]));
        const expected = bceWithLogitsReference.backward(logits, targets, mask, 1.5);
        const tolerance = { atol: 1e-9, rtol: 2e-6 };
        expectClose(await logitsTensor.grad!.download(), expected.gradLogits, tolerance, "d logits");
        expectClose(await targetsTensor.grad!.download(), expected.gradTargets, tolerance, "d targets");
        if (maskKind === "all")
          expect((await logitsTensor.grad!.download()).every((grad) => grad === 0)).toBe(true);
      },
    );
  },
);

describe("bceWithLogitsLoss stability", () => {
  it("stays finite and accurate for logits of ±100 and ±1e4", async () => {
    const logits = Float64Array.of(100, -100, 1e4, -1e4, 30, -30, 1e-3, 0);
    const targets = Float64Array.of(1, 0, 0, 1, 1, 0, 1, 0);
    const logitsTensor = await upload(logits, [8], true);
    const loss = bceWithLogitsLoss(logitsTensor, await upload(targets, [8]));
    const [value] = await loss.download();
    expect(Number.isFinite(value)).toBe(true);
    expect(Math.abs(value - bceWithLogitsReference.forward(logits, targets))).toBeLessThan(1e-6 * 2500);
    backward(loss, await upload([1], [1]));
    const grads = await logitsTensor.grad!.download();
    expect(grads.every(Number.isFinite)).toBe(true);
    expectClose(
      grads,
      bceWithLogitsReference.backward(logits, targets, null, 1).gradLogits,
      { atol: 1e-9, rtol: 1e-6 },
      "extreme logits",
    );
  });

  it("keeps the small losses of confident, correct predictions (log1p, not log(1 + e))", async () => {
    const logits = Float64Array.of(20, -20, 17);
    const targets = Float64Array.of(1, 0, 1);
    const [value] = await bceWithLogitsLoss(await upload(logits, [3]), await upload(targets, [3])).download();
    const expected = bceWithLogitsReference.forward(logits, targets); // ~1.6e-8: log(1 + e) would give 0
    expect(expected).toBeGreaterThan(0);
    expect(Math.abs(value - expected)).toBeLessThan(1e-3 * expected);
  });
});

describe("loss references", () => {
  it.each(REDUCTIONS)("mse (%s) backward agrees with finite differences", (reduction) => {
    const prediction = randomValues(12, 21);
    const target = randomValues(12, 22);
    const gradOutput = reduction === "none" ? randomValues(12, 23) : Float64Array.of(0.6);
    const analytic = mseLossReference.backward(prediction, target, gradOutput, reduction);
    const forward = ([p, t]: Float64Array[]) => mseLossReference.forward(p, t, reduction);
    const fd = { atol: 1e-7, rtol: 1e-6 };
    const inputs = [prediction, target];
    expectClose(
      analytic.gradPrediction,
      finiteDifferenceGradient(forward, inputs, gradOutput, 0),
      fd,
      "fd p",
    );
    expectClose(analytic.gradTarget, finiteDifferenceGradient(forward, inputs, gradOutput, 1), fd, "fd t");
  });

  it("bce backward agrees with finite differences (with a partial mask)", () => {
    const logits = randomValues(12, 31, 3);
    const targets = randomValues(12, 32).map((value) => (value > 0 ? 1 : 0));
    const mask = randomValues(12, 33).map((value) => (value > 0 ? 1 : 0));
    const analytic = bceWithLogitsReference.backward(logits, targets, mask, 1.3);
    const forward = ([z, y]: Float64Array[]) => Float64Array.of(bceWithLogitsReference.forward(z, y, mask));
    const fd = { atol: 1e-7, rtol: 1e-6 };
    const gradOutput = Float64Array.of(1.3);
    expectClose(
      analytic.gradLogits,
      finiteDifferenceGradient(forward, [logits, targets], gradOutput, 0),
      fd,
      "fd z",
    );
    expectClose(
      analytic.gradTargets,
      finiteDifferenceGradient(forward, [logits, targets], gradOutput, 1),
      fd,
      "fd y",
    );
  });
});

describe("loss bad input", () => {
  it("names the op and the shapes", async () => {
    const a = await upload(randomValues(6, 1), [2, 3]);
    const b = await upload(randomValues(6, 2), [3, 2]);
    expect(() => mseLoss(a, b)).toThrow(OpError);
    expect(() => mseLoss(a, b)).toThrow(
      "mseLoss: prediction and target must have the same shape (prediction: [2, 3], target: [3, 2])",
    );
    expect(() => mseLoss(a, a, "median" as LossReduction)).toThrow(
      'mseLoss: reduction must be "mean", "sum" or "none", got "median"',
    );
    expect(() => bceWithLogitsLoss(a, b)).toThrow(
      "bceWithLogitsLoss: logits and targets must have the same shape (logits: [2, 3], targets: [3, 2])",
    );
    expect(() => bceWithLogitsLoss(a, a, b)).toThrow(
      "bceWithLogitsLoss: logits and mask must have the same shape (logits: [2, 3], mask: [3, 2])",
    );
    const device = await gpu();
    if (device.features.has("shader-f16")) {
      const half = Tensor.upload(device, new Float32Array(6), [2, 3], "f16");
      expect(() => mseLoss(half, a)).toThrow("mseLoss: needs f32 prediction, got f16 (prediction: [2, 3])");
      expect(() => bceWithLogitsLoss(a, a, half)).toThrow(
        "bceWithLogitsLoss: needs f32 mask, got f16 (mask: [2, 3])",
      );
    }
  });

  it("records nothing under noGrad", async () => {
    const a = await upload([1, 2], [2], true);
    const loss = noGrad(() => mseLoss(a, a));
    expect(loss.node).toBeNull();
  });
});
