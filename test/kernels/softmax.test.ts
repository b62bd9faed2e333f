/**
 * Softmax, the worked example of the per-op layout (ops/softmax/): the table-driven checks of
 * check-op.ts, the variant choice on its own, and the WGSL that `cxr kernels dump` prints being the
 * WGSL that runs.
 */
import {
  backward,
  type Gpu,
  OpError,
  SOFTMAX_VARIANTS,
  type SoftmaxVariant,
  softmax,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { chooseSoftmaxVariant } from "../../packages/kernels/src/ops/softmax/choose.ts";
import { SOFTMAX_KERNELS } from "../../packages/kernels/src/ops/softmax/index.ts";
import { type SoftmaxParams, softmaxOpReference } from "../../packages/kernels/src/ops/softmax/reference.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { gpu, randomValues, upload } from "./helpers.ts";

/** A [batch, length] mask with some entries of batch 0 dropped and batch 2 dropped entirely. */
function partialMask(batch: number, length: number): Float64Array {
  const mask = new Float64Array(batch * length).fill(1);
  for (const j of [0, 4, 8]) mask[j] = 0;
  for (let j = 0; j < length; j++) mask[2 * length + j] = 0;
  return mask;
}

// Spread of +-24: large enough that an unstable exp(x) without the max shift would overflow at scale 2.
const SPREAD = 8;
const cases: OpCase<SoftmaxParams>[] = [
  { reason: "a single element", params: { shape: [1], axis: -1 }, inputs: [[1]], spread: SPREAD },
  { reason: "rows of length 1", params: { shape: [3, 1], axis: -1 }, inputs: [[3, 1]], spread: SPREAD },
  { reason: "odd sizes", params: { shape: [5, 7], axis: -1 }, inputs: [[5, 7]], spread: SPREAD },
  {
    reason: "rank 3 with attention's scale",
    params: { shape: [2, 3, 77], axis: -1, scale: 0.125 },
    inputs: [[2, 3, 77]],
    spread: SPREAD,
  },
  {
    reason: "a row one past a power of two, positive axis",
    params: { shape: [4, 1025], axis: 1 },
    inputs: [[4, 1025]],
    spread: SPREAD,
  },
  {
    reason: "few long rows (the CPU adapter's workgroup case)",
    params: { shape: [3, 5000], axis: -1 },
    inputs: [[3, 5000]],
    spread: SPREAD,
  },
  {
    reason: "a middle axis (strided rows)",
    params: { shape: [2, 9, 3], axis: 1 },
    inputs: [[2, 9, 3]],
    spread: SPREAD,
  },
  {
    reason: "the first axis with scale 2",
    params: { shape: [6, 4, 5], axis: 0, scale: 2 },
    inputs: [[6, 4, 5]],
    spread: SPREAD,
  },
  {
    reason: "a per-batch mask; a fully masked row is zeros",
    params: { shape: [3, 4, 9], axis: -1, scale: 0.5, mask: partialMask(3, 9) },
    inputs: [[3, 4, 9]],
    spread: SPREAD,
  },
  {
    reason: "huge inputs stay finite (forward)",
    params: { shape: [1, 4], axis: -1 },
    inputs: [[1, 4]],
    values: [[1e30, 1e30, -1e30, 3e38]],
    forwardOnly: true,
  },
  {
    reason: "small last axis, for finite differences",
    params: { shape: [4, 6], axis: -1, scale: 0.7 },
    inputs: [[4, 6]],
    spread: 2,
    finiteDifferences: true,
  },
  {
    reason: "small middle axis, for finite differences",
    params: { shape: [3, 4, 2], axis: 1, scale: 0.7 },
    inputs: [[3, 4, 2]],
    spread: 2,
    finiteDifferences: true,
  },
];

const badInputs: BadInputCase[] = [
  {
    reason: "an axis out of range",
    run: (device) => softmax(Tensor.upload(device, randomValues(12, 1), [3, 4]), 2),
    throws: "softmax: axis 2 is out of range for a rank-2 tensor (x: [3, 4])",
  },
  {
    reason: "a mask of the wrong shape",
    run: (device) =>
      softmax(Tensor.upload(device, randomValues(12, 1), [3, 4]), -1, {
        mask: Tensor.upload(device, [1, 1, 1], [1, 3]),
      }),
    throws: "softmax: mask must be [x.shape[0], length of the softmax axis] (x: [3, 4], mask: [1, 3])",
  },
  {
    reason: "a mask with the softmax over another axis",
    run: (device) =>
      softmax(Tensor.upload(device, randomValues(12, 1), [3, 4]), 0, {
        mask: Tensor.upload(device, new Float64Array(12).fill(1), [3, 4]),
      }),
    throws: "softmax: a mask needs the softmax over the last axis",
  },
  {
    reason: "a scale that is not finite",
    run: (device) => softmax(Tensor.upload(device, randomValues(12, 1), [3, 4]), -1, { scale: Number.NaN }),
    throws: "softmax: scale must be finite, got NaN",
  },
  {
    reason: "u32 input",
    run: (device) => softmax(Tensor.upload(device, [1, 2], [2], "u32")),
    throws: "softmax: needs f32 or f16 input, got u32 (x: [2])",
  },
];

checkOp(
  {
    name: "softmax",
    variants: SOFTMAX_VARIANTS,
    reference: softmaxOpReference,
    run: ([x], { axis, scale, mask, shape }, variant, device) =>
      softmax(x, axis, {
        scale,
        variant,
        mask: mask ? Tensor.upload(device, Float32Array.from(mask), [shape[0], shape.at(axis)!]) : undefined,
      }),
    // f32 exp2 and the online rescaling lose a few ulps per element; outputs are probabilities <= 1.
    // The backward sums dy * y over the row in f32: its error grows with the row length.
    tolerance: ({ params }) => ({
      forward: { atol: 1e-6, rtol: 2e-5 },
      backward: { atol: 2e-6 * Math.sqrt(params.shape.at(params.axis)!), rtol: 5e-5 },
    }),
  },
  cases,
  badInputs,
);

describe("softmax: the rest", () => {
  it.each(SOFTMAX_VARIANTS)("%s: a fully masked row is exactly zero", async (variant) => {
    const mask = await upload(partialMask(3, 9), [3, 9]);
    const y = await softmax(await upload(randomValues(108, 8), [3, 4, 9]), -1, { variant, mask }).download();
    expect(Array.from(y.subarray(2 * 36)).every((value) => value === 0)).toBe(true);
    expect(y[0]).toBe(0);
  });

  it("f16 input runs the f16 variant (inference only: tested against float64 in half.test.ts)", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return;
    const y = softmax(Tensor.upload(device, [1, 2], [2], "f16"));
    expect(y.dtype).toBe("f16");
    expect(() => softmax(Tensor.upload(device, [1, 2], [2], "f16").trainable())).toThrow(OpError);
    expect(() => softmax(Tensor.upload(device, [1, 2], [2], "f16").trainable())).toThrow(
      "softmax: the f16 kernels are inference only (no backward): run under noGrad(), or train in f32",
    );
  });

  it("chooses per adapter kind and row layout (no GPU needed)", () => {
    const rows = (count: number, length: number) => ({ rows: count, length, stride: 1 });
    expect(chooseSoftmaxVariant({ kind: "discrete" }, rows(1, 10))).toBe("gpu-workgroup");
    expect(chooseSoftmaxVariant({ kind: "integrated" }, rows(4096, 4096))).toBe("gpu-workgroup");
    expect(chooseSoftmaxVariant({ kind: "cpu" }, rows(4096, 4096))).toBe("cpu-rows");
    expect(chooseSoftmaxVariant({ kind: "cpu" }, rows(31, 4096))).toBe("gpu-workgroup");
    expect(chooseSoftmaxVariant({ kind: "cpu" }, rows(31, 4095))).toBe("cpu-rows");
    expect(chooseSoftmaxVariant({ kind: "cpu" }, rows(32, 5000))).toBe("cpu-rows");
  });

  it.each(SOFTMAX_VARIANTS)("%s: the WGSL that `cxr kernels dump` prints is what runs", async (variant) => {
    const device = await gpu();
    const compiled: string[] = [];
    const pipeline = device.pipeline.bind(device);
    const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
      compiled.push(code);
      return pipeline(code, label, entryPoint);
    };
    device.pipeline = spy;
    try {
      const x = await upload(randomValues(20, 5), [4, 5], true);
      const y = softmax(x, -1, { variant: variant as SoftmaxVariant });
      await y.download();
      expect(compiled).toEqual([SOFTMAX_KERNELS[variant].forward]);
      backward(y, await upload(randomValues(20, 6), [4, 5]));
      await x.grad!.download();
      expect(compiled).toEqual([SOFTMAX_KERNELS[variant].forward, SOFTMAX_KERNELS[variant].backward]);
      x.release();
      y.release();
    } finally {
      delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
    }
  });
});
