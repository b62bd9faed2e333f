/**
 * The losses (ops/loss/) as checkOp tables: MSE for each reduction and BCE-with-logits for each mask
 * kind, forward and both operands' gradients against the float64 references, the reference
 * gradients by finite differences, bad input; then output shapes, exact zeros when all is masked,
 * numerical stability, noGrad and the dump.
 */
import {
  backward,
  bceWithLogitsLoss,
  bceWithLogitsReference,
  type LossReduction,
  mseLoss,
  noGrad,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { LOSS_KERNELS } from "../../packages/kernels/src/ops/loss/index.ts";
import {
  type BceParams,
  bceOpReference,
  type MseParams,
  mseOpReference,
} from "../../packages/kernels/src/ops/loss/reference.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { compiledWhile } from "./compiled.ts";
import { asFloat32, expectClose, gpu, randomValues, upload } from "./helpers.ts";

const REDUCTIONS: LossReduction[] = ["mean", "sum", "none"];
const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

const a23 = (device: Parameters<BadInputCase["run"]>[0]) => Tensor.upload(device, randomValues(6, 1), [2, 3]);
const b32 = (device: Parameters<BadInputCase["run"]>[0]) => Tensor.upload(device, randomValues(6, 2), [3, 2]);

for (const reduction of REDUCTIONS) {
  const shaped = (reason: string, shape: number[]): OpCase<MseParams> => ({
    reason,
    params: { reduction },
    inputs: [shape, shape],
  });
  checkOp(
    {
      name: `mseLoss ${reduction}`,
      variants: ["default"],
      reference: mseOpReference,
      run: ([prediction, target]) => mseLoss(prediction, target, reduction),
      // A sum of `size` squares (~2 each) carries ~sqrt(size) ulps: 1e-6 relative with chunked sums.
      tolerance: () => ({ forward: { atol: 1e-6, rtol: 2e-6 }, backward: { atol: 1e-7, rtol: 1e-6 } }),
    },
    [
      shaped("a single element", [1]),
      shaped("an odd size", [7]),
      shaped("rank 3, odd sizes", [3, 5, 17]),
      shaped("a batch of 64x64 SD latents (several chunks)", [2, 4, 64, 64]),
      { ...shaped("12 elements, for finite differences", [12]), finiteDifferences: true },
    ],
    reduction === "mean"
      ? [
          {
            reason: "operands of different shapes",
            run: (device) => mseLoss(a23(device), b32(device)),
            throws:
              "mseLoss: prediction and target must have the same shape (prediction: [2, 3], target: [3, 2])",
          },
          {
            reason: "an unknown reduction",
            run: (device) => mseLoss(a23(device), a23(device), "median" as LossReduction),
            throws: 'mseLoss: reduction must be "mean", "sum" or "none", got "median"',
          },
          {
            reason: "a u32 prediction",
            run: (device) =>
              mseLoss(Tensor.upload(device, [1, 2], [2], "u32"), Tensor.upload(device, [1, 2], [2])),
            throws: "mseLoss: needs f32 prediction, got u32 (prediction: [2])",
          },
        ]
      : [],
  );
}

type MaskKind = "none" | "partial" | "weights" | "all";

function makeMask(kind: MaskKind, size: number, seed: number): Float64Array | null {
  if (kind === "none") return null;
  if (kind === "all") return new Float64Array(size); // every label uncertain
  const random = randomValues(size, seed);
  return kind === "partial"
    ? random.map((value) => (value > 0.3 ? 1 : 0))
    : random.map((value) => Math.abs(value));
}

/** Logits of spread 4 and 0/1 labels, as the classifier sees them. */
function bceCase(
  reason: string,
  shape: number[],
  maskKind: MaskKind,
  finiteDifferences = false,
): OpCase<BceParams> {
  const size = sizeOf(shape);
  const seed = finiteDifferences ? 31 : 11 + size;
  return {
    reason,
    params: { mask: makeMask(maskKind, size, 17 + size) },
    inputs: [shape, shape],
    values: [
      Array.from(asFloat32(randomValues(size, seed, finiteDifferences ? 3 : 4))),
      Array.from(randomValues(size, seed + 2), (value) => (value > 0 ? 1 : 0)),
    ],
    finiteDifferences,
  };
}

for (const maskKind of ["none", "partial", "weights", "all"] as MaskKind[]) {
  checkOp(
    {
      name: `bceWithLogitsLoss mask ${maskKind}`,
      variants: ["default"],
      reference: bceOpReference,
      run: ([logits, targets], { mask }, _variant, device) =>
        bceWithLogitsLoss(
          logits,
          targets,
          mask ? Tensor.upload(device, Float32Array.from(mask), logits.shape) : null,
        ),
      tolerance: () => ({ forward: { atol: 1e-7, rtol: 2e-6 }, backward: { atol: 1e-9, rtol: 2e-6 } }),
    },
    [
      bceCase("a single element", [1], maskKind),
      bceCase("one CheXpert row of 14 labels", [14], maskKind),
      bceCase("a classifier batch [16, 14]", [16, 14], maskKind),
      bceCase("70001 elements (many chunks)", [70001], maskKind),
      ...(maskKind === "partial"
        ? [bceCase("12 elements, for finite differences", [12], maskKind, true)]
        : []),
    ],
    maskKind === "none"
      ? [
          {
            reason: "logits and targets of different shapes",
            run: (device) => bceWithLogitsLoss(a23(device), b32(device)),
            throws:
              "bceWithLogitsLoss: logits and targets must have the same shape (logits: [2, 3], targets: [3, 2])",
          },
          {
            reason: "a mask of another shape",
            run: (device) => bceWithLogitsLoss(a23(device), a23(device), b32(device)),
            throws:
              "bceWithLogitsLoss: logits and mask must have the same shape (logits: [2, 3], mask: [3, 2])",
          },
          {
            reason: "a u32 mask",
            run: (device) =>
              bceWithLogitsLoss(
                a23(device),
                a23(device),
                Tensor.upload(device, new Float32Array(6), [2, 3], "u32"),
              ),
            throws: "bceWithLogitsLoss: needs f32 mask, got u32 (mask: [2, 3])",
          },
        ]
      : [],
  );
}

describe("losses: the rest", () => {
  it.each(REDUCTIONS)(
    "mseLoss %s gives [1] for a reduction, the input's shape for none",
    async (reduction) => {
      const x = await upload(randomValues(15, 1), [3, 5]);
      expect(mseLoss(x, x, reduction).shape).toEqual(reduction === "none" ? [3, 5] : [1]);
      expect(bceWithLogitsLoss(x, x).shape).toEqual([1]);
    },
  );

  it("bce with every element masked gives exactly 0 and zero gradients", async () => {
    const logits = await upload(randomValues(70001, 3, 4), [70001], true);
    const targets = await upload(new Float64Array(70001).fill(1), [70001]);
    const loss = bceWithLogitsLoss(logits, targets, await upload(new Float64Array(70001), [70001]));
    expect((await loss.download())[0]).toBe(0);
    backward(loss, await upload([1.5], [1]));
    expect((await logits.grad!.download()).every((grad) => grad === 0)).toBe(true);
  });

  it("bce stays finite and accurate for logits of ±100 and ±1e4", async () => {
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

  it("bce keeps the small losses of confident, correct predictions (log1p, not log(1 + e))", async () => {
    const logits = Float64Array.of(20, -20, 17);
    const targets = Float64Array.of(1, 0, 1);
    const [value] = await bceWithLogitsLoss(await upload(logits, [3]), await upload(targets, [3])).download();
    const expected = bceWithLogitsReference.forward(logits, targets); // ~1.6e-8: log(1 + e) would give 0
    expect(expected).toBeGreaterThan(0);
    expect(Math.abs(value - expected)).toBeLessThan(1e-3 * expected);
  });

  it("f16 operands are refused where the adapter has shader-f16", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return;
    const a = a23(device);
    const half = Tensor.upload(device, new Float32Array(6), [2, 3], "f16");
    expect(() => mseLoss(half, a)).toThrow("mseLoss: needs f32 prediction, got f16 (prediction: [2, 3])");
    expect(() => bceWithLogitsLoss(a, a, half)).toThrow(
      "bceWithLogitsLoss: needs f32 mask, got f16 (mask: [2, 3])",
    );
  });

  it("records nothing under noGrad", async () => {
    const a = await upload([1, 2], [2], true);
    const loss = noGrad(() => mseLoss(a, a));
    expect(loss.node).toBeNull();
  });

  it("the WGSL that `cxr kernels dump loss` prints is what runs", async () => {
    const k = LOSS_KERNELS.default;
    const compiled = await compiledWhile(async (device) => {
      const t = Tensor.upload(device, [0, 1, 1], [3]);
      const losses = [
        (p: Tensor) => mseLoss(p, t, "none"),
        (p: Tensor) => mseLoss(p, t, "mean"),
        (p: Tensor) => bceWithLogitsLoss(p, t),
      ];
      for (const lossOf of losses) {
        // A fresh prediction each time, so no gradient accumulation kernel runs in between.
        const p = Tensor.upload(device, [1, 2, 3], [3]).trainable();
        const loss = lossOf(p);
        backward(loss, Tensor.upload(device, new Float32Array(loss.size).fill(1), loss.shape));
        await p.grad!.download();
      }
    });
    expect(compiled).toEqual([
      k.mseElementwise,
      k.mseBackward,
      k.msePartials,
      k.mseFinalize,
      k.mseBackward,
      k.bcePartials,
      k.bceFinalize,
      k.bceBackward,
    ]);
    expect(dumpKernelSources({ op: "loss", pass: "bceBackward" })).toBe(
      `// loss / default / bceBackward${k.bceBackward}\n`,
    );
  });
});
