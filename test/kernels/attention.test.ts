import {
  ATTENTION_VARIANTS,
  type AttentionShape,
  type AttentionVariant,
  attention,
  attentionCanUseSubgroups,
  attentionComposed,
  attentionReference,
  backward,
  chooseAttentionVariant,
  noGrad,
  OpError,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { asFloat32, expectClose, finiteDifferenceGradient, gpu, randomValues, upload } from "./helpers.ts";

interface AttentionCase {
  /** [batch, heads, queryLength, keyLength, headDim] */
  dims: [number, number, number, number, number];
  /** Keys dropped per batch (index lists); a list covering every key masks whole rows. */
  dropped?: number[][];
  scale?: number;
}

const CASES: AttentionCase[] = [
  { dims: [1, 1, 1, 1, 1] },
  { dims: [1, 2, 1, 77, 7] }, // one query against CLIP's 77 tokens; odd D is zero-padded to 8
  { dims: [2, 1, 77, 1, 40] }, // a single key: every probability is 1
  { dims: [1, 2, 129, 129, 64], scale: 0.3 }, // self-attention, length not a multiple of the block
  { dims: [2, 1, 65, 77, 160] }, // cross-attention at SD 1.x's largest head size
  { dims: [2, 2, 33, 20, 64], dropped: [[0, 5, 19], []] },
  { dims: [2, 3, 9, 13, 8], dropped: [[], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]] }, // batch 1 fully masked
];

function maskValues(batch: number, keyLength: number, dropped: number[][]): Float64Array {
  const mask = new Float64Array(batch * keyLength).fill(1);
  dropped.forEach((keys, b) => {
    for (const j of keys) mask[b * keyLength + j] = 0;
  });
  return mask;
}

function shapeOf([batch, heads, queryLength, keyLength, headDim]: AttentionCase["dims"]): AttentionShape {
  return { batch, heads, queryLength, keyLength, headDim };
}

// f32 dot products over D and sums over Lk: errors grow with both; values here are O(1).
const tolerance = (shape: AttentionShape) => ({
  atol: 2e-6 * Math.sqrt(shape.headDim + shape.keyLength + shape.queryLength),
  rtol: 1e-4,
});

interface Prepared {
  shape: AttentionShape;
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  gradOutput: Float64Array;
  mask?: Float64Array;
  scale?: number;
}

function prepare(testCase: AttentionCase, seed: number): Prepared {
  const shape = shapeOf(testCase.dims);
  const { batch, heads, queryLength, keyLength, headDim } = shape;
  const querySize = batch * heads * queryLength * headDim;
  const keySize = batch * heads * keyLength * headDim;
  return {
    shape,
    q: asFloat32(randomValues(querySize, seed, 1.5)),
    k: asFloat32(randomValues(keySize, seed + 1, 1.5)),
    v: asFloat32(randomValues(keySize, seed + 2)),
    gradOutput: asFloat32(randomValues(querySize, seed + 3)),
    mask: testCase.dropped ? maskValues(batch, keyLength, testCase.dropped) : undefined,
    scale: testCase.scale,
  };
}

async function runOnGpu(
  data: Prepared,
  run: (q: Tensor, k: Tensor, v: Tensor, keyMask: Tensor | undefined) => Tensor,
) {
  const { batch, heads, queryLength, keyLength, headDim } = data.shape;
  const q = await upload(data.q, [batch, heads, queryLength, headDim], true);
  const k = await upload(data.k, [batch, heads, keyLength, headDim], true);
  const v = await upload(data.v, [batch, heads, keyLength, headDim], true);
  const keyMask = data.mask ? await upload(data.mask, [batch, keyLength]) : undefined;
  const output = run(q, k, v, keyMask);
  const outputValues = await output.download();
  backward(output, await upload(data.gradOutput, output.shape));
  const result = {
    output: outputValues,
    gradQuery: await q.grad!.download(),
    gradKey: await k.grad!.download(),
    gradValue: await v.grad!.download(),
  };
  for (const tensor of [q, k, v, output, keyMask]) tensor?.release();
  return result;
}

function referenceOf(data: Prepared) {
  const options = { scale: data.scale, keyMask: data.mask };
  return {
    ...attentionReference.forward(data.q, data.k, data.v, data.shape, options),
    ...attentionReference.backward(data.q, data.k, data.v, data.gradOutput, data.shape, options),
  };
}

const device = await gpu();
const runnable = ATTENTION_VARIANTS.filter(
  (variant) => variant !== "cpu-rows" || attentionCanUseSubgroups(device),
);

describe("attention variant choice", () => {
  it("picks cpu-rows on a CPU adapter with subgroups and gpu-tiled otherwise", () => {
    const shape = shapeOf([1, 8, 1024, 1024, 64]);
    const expected = device.kind === "cpu" && attentionCanUseSubgroups(device) ? "cpu-rows" : "gpu-tiled";
    expect(chooseAttentionVariant(device, shape)).toBe(expected);
  });
});

describe.each(runnable)("fused attention, variant %s", (variant: AttentionVariant) => {
  it.each(CASES)("forward and dQ, dK, dV match the float64 reference: %j", async (testCase) => {
    const data = prepare(testCase, 100 + testCase.dims.reduce((a, b) => a * b, 1));
    const got = await runOnGpu(data, (q, k, v, keyMask) =>
      attention(q, k, v, { variant, keyMask, scale: data.scale }),
    );
    const expected = referenceOf(data);
    const within = tolerance(data.shape);
    expectClose(got.output, expected.output, within, `${variant} output`);
    expectClose(got.gradQuery, expected.gradQuery, within, `${variant} dQ`);
    expectClose(got.gradKey, expected.gradKey, within, `${variant} dK`);
    expectClose(got.gradValue, expected.gradValue, within, `${variant} dV`);
    if (testCase.dropped?.some((keys) => keys.length === data.shape.keyLength)) {
      // The fully masked batch's rows and its keys' gradients are exactly zero (documented behaviour).
      const half = got.output.length / 2;
      expect(got.output.subarray(half).every((value) => value === 0)).toBe(true);
      expect(got.gradKey.subarray(got.gradKey.length / 2).every((value) => value === 0)).toBe(true);
    }
  });
});

describe("attention composed from matmul and softmax", () => {
  it("agrees with the fused kernel forward and backward, with a mask", async () => {
    const data = prepare({ dims: [2, 2, 37, 50, 24], dropped: [[3, 49], [0]], scale: 0.4 }, 7);
    const composed = await runOnGpu(data, (q, k, v, keyMask) =>
      attentionComposed(q, k, v, { keyMask, scale: data.scale }),
    );
    const fused = await runOnGpu(data, (q, k, v, keyMask) =>
      attention(q, k, v, { keyMask, scale: data.scale }),
    );
    const expected = referenceOf(data);
    const within = tolerance(data.shape);
    for (const [name, values] of Object.entries(composed)) {
      expectClose(values, expected[name as keyof typeof expected], within, `composed ${name}`);
      expectClose(values, fused[name as keyof typeof fused], within, `composed vs fused ${name}`);
    }
  });
});

describe("attention memory", () => {
  it("fused working memory grows linearly with length, the composition's quadratically", async () => {
    const working = async (length: number, fused: boolean) => {
      const shape = [1, 2, length, 8];
      const [q, k, v] = [1, 2, 3].map((seed) =>
        Tensor.upload(device, Float32Array.from(randomValues(2 * length * 8, seed)), shape),
      );
      await device.sync();
      device.pool.resetPeak();
      const before = device.pool.snapshot().inUseBytes;
      const output = noGrad(() => (fused ? attention(q, k, v) : attentionComposed(q, k, v)));
      const peak = device.pool.snapshot().peakInUseBytes - before;
      await output.download();
      for (const tensor of [q, k, v, output]) tensor.release();
      return peak;
    };
    const fusedGrowth = (await working(512, true)) / (await working(256, true));
    const composedGrowth = (await working(512, false)) / (await working(256, false));
    expect(fusedGrowth).toBeLessThan(2.2);
    expect(composedGrowth).toBeGreaterThan(3.5);
  });
});

describe("attention reference", () => {
  it("gradients agree with finite differences of the forward, with a mask and a scale", () => {
    const shape: AttentionShape = { batch: 2, heads: 2, queryLength: 3, keyLength: 4, headDim: 5 };
    const options = { scale: 0.6, keyMask: Float64Array.from([1, 0, 1, 1, 1, 1, 1, 0]) };
    const q = randomValues(60, 31);
    const k = randomValues(80, 32);
    const v = randomValues(80, 33);
    const gradOutput = randomValues(60, 34);
    const analytic = attentionReference.backward(q, k, v, gradOutput, shape, options);
    const forward = ([qs, ks, vs]: Float64Array[]) =>
      attentionReference.forward(qs, ks, vs, shape, options).output;
    const names = ["gradQuery", "gradKey", "gradValue"] as const;
    names.forEach((name, which) => {
      const numeric = finiteDifferenceGradient(forward, [q, k, v], gradOutput, which);
      expectClose(analytic[name], numeric, { atol: 1e-8, rtol: 1e-6 }, `reference ${name}`);
    });
  });
});

describe("attention bad input", () => {
  it("names the op and the shapes", async () => {
    const q = await upload(randomValues(2 * 3 * 8, 1), [1, 2, 3, 8]);
    const k = await upload(randomValues(2 * 5 * 8, 2), [1, 2, 5, 8]);
    const v = await upload(randomValues(2 * 5 * 8, 3), [1, 2, 5, 8]);
    expect(() => attention(q, k, v)).not.toThrow();
    const flat = await upload(randomValues(24, 4), [2, 3, 4]);
    expect(() => attention(flat, k, v)).toThrow(OpError);
    expect(() => attention(flat, k, v)).toThrow(
      "attention: q must be [batch, heads, length, headDim] (q: [2, 3, 4], k: [1, 2, 5, 8], v: [1, 2, 5, 8])",
    );
    const otherDim = await upload(randomValues(2 * 5 * 4, 5), [1, 2, 5, 4]);
    expect(() => attention(q, otherDim, v)).toThrow(
      "attention: k must match q in batch, heads and head dimension (q: [1, 2, 3, 8], k: [1, 2, 5, 4])",
    );
    const shortValues = await upload(randomValues(2 * 4 * 8, 6), [1, 2, 4, 8]);
    expect(() => attention(q, k, shortValues)).toThrow(
      "attention: v must have the shape of k (k: [1, 2, 5, 8], v: [1, 2, 4, 8])",
    );
    const badMask = await upload([1, 1, 1], [1, 3]);
    expect(() => attention(q, k, v, { keyMask: badMask })).toThrow(
      "attention: keyMask must be [batch, keyLength] (q: [1, 2, 3, 8], k: [1, 2, 5, 8], keyMask: [1, 3])",
    );
    expect(() => attentionComposed(q, k, v, { keyMask: badMask })).toThrow(
      "attentionComposed: keyMask must be",
    );
    expect(() => attention(q, k, v, { scale: Number.POSITIVE_INFINITY })).toThrow(
      "attention: scale must be finite, got Infinity (q: [1, 2, 3, 8])",
    );
    expect(() => attention(q, k, v, { variant: "texture" as AttentionVariant })).toThrow(
      'attention: unknown variant "texture"',
    );
    const wide = await upload(new Float64Array(264), [1, 1, 1, 264]);
    expect(() => attention(wide, wide, wide)).toThrow(
      "attention: head dimension 264 exceeds the supported maximum 256 (q: [1, 1, 1, 264], k: [1, 1, 1, 264])",
    );
    if (device.features.has("shader-f16")) {
      const half = Tensor.upload(device, new Float32Array(48), [1, 2, 3, 8], "f16");
      expect(() => attention(half, k, v)).toThrow("attention: needs f32 q, got f16");
    }
  });

  it("records nothing under noGrad", async () => {
    const q = await upload(randomValues(16, 1), [1, 1, 2, 8], true);
    const output = noGrad(() => attention(q, q, q));
    expect(output.requiresGrad).toBe(false);
    expect(output.node).toBeNull();
  });
});
