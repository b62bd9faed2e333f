/**
 * The f16 (half precision, inference only) kernels against the float64 references.
 *
 * Inputs are drawn, rounded to f16 and uploaded as f16, so the reference sees exactly the values the
 * GPU reads. Every f16 kernel widens its loads to f32, computes in f32 and rounds once when storing, so
 * its error against the float64 result y is at most
 *   |round16(y32) - y32| + |y32 - y| <= 2^-11 |y| (round to nearest, relative) + 2^-25 (half the
 *   smallest f16 subnormal) + the f32 error of the kernel's own arithmetic,
 * which gives the tolerance below: rtol 2^-11 (times 1.001 for the f32 error in |y32| vs |y|), atol
 * 2^-24 + f32 work (2^-23 per term of a sum times the sum of the terms' magnitudes, or 2e-6 for
 * functions evaluated with exp/erf approximations in f32). Layout kernels and cast are exact. A kernel
 * that rounded an intermediate to f16 (e.g. summed in f16) would exceed this by a factor of the
 * number of terms.
 */
import {
  add,
  attention,
  attentionComposed,
  attentionReference,
  binaryReference,
  cast,
  concat,
  conv2d,
  div,
  embedding,
  embeddingReference,
  type Gpu,
  gelu,
  groupNorm,
  Linear,
  layerNorm,
  matmul,
  matmulReference,
  mul,
  noGrad,
  ParameterInit,
  permute,
  relu,
  roundAllToHalf,
  roundToHalf,
  type Shape,
  scale,
  sigmoidOp,
  silu,
  softmax,
  softmaxReference,
  split,
  sub,
  Tensor,
  tanh,
  type UnaryKind,
  unaryReference,
  upsampleNearest,
  withParameterDtype,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { requireHalfAdapter } from "../../packages/kernels/src/ops/common/half.ts";
import { conv2dReference } from "../../packages/kernels/src/ops/conv2d/index.ts";
import { groupNormReference } from "../../packages/kernels/src/ops/groupnorm/reference.ts";
import { layerNormReference } from "../../packages/kernels/src/ops/layernorm/reference.ts";
import { layoutReference } from "../../packages/kernels/src/ops/layout/reference.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { expectClose, gpu, randomValues, type Tolerance } from "./helpers.ts";

const HALF_RTOL = 2 ** -11 * 1.001;
const HALF_ATOL = 2 ** -24;

/** The tolerance of an f16 result whose f32 computation sums `terms` products of magnitude up to `magnitude`. */
function halfTolerance(terms: number, magnitude: number, extra = 0): Tolerance {
  return { rtol: HALF_RTOL, atol: HALF_ATOL + 2 ** -23 * terms * magnitude + extra };
}

function halfValues(count: number, seed: number, scaleBy = 1): Float64Array {
  return roundAllToHalf(randomValues(count, seed, scaleBy));
}

function uploadHalf(device: Gpu, values: Float64Array, shape: Shape): Tensor {
  return Tensor.upload(device, Float32Array.from(values), shape, "f16");
}

const maxAbs = (values: Float64Array) => values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

async function hasHalf(): Promise<Gpu | null> {
  const device = await gpu();
  return device.features.has("shader-f16") ? device : null;
}

/** The device with `shader-f16` hidden: everything else is the real adapter. */
function withoutHalf(device: Gpu): Gpu {
  return Object.create(device, {
    features: { value: new Set([...device.features].filter((f) => f !== "shader-f16")) },
  });
}

describe("f16 kernels vs float64 (tolerance: 2^-11 relative from the f16 rounding, plus f32 work)", async () => {
  const device = await hasHalf();
  // The adapter check is tested below with a fake feature set; the numeric tests need shader-f16.
  const itHalf = device ? it : it.skip;

  itHalf("cast: f32 -> f16 rounds to nearest even and saturates; f16 -> f32 is exact", async () => {
    const d = device!;
    const values = [
      0,
      -0,
      1,
      1 + 2 ** -11,
      1 + 3 * 2 ** -11,
      65504,
      65519,
      70000,
      -1e9,
      2 ** -24,
      2 ** -26,
      3e-5,
      -7.3,
    ];
    const source = Tensor.upload(d, values, [values.length]);
    const half = cast(source, "f16");
    expect(half.dtype).toBe("f16");
    const back = cast(half, "f32");
    expect(back.dtype).toBe("f32");
    const expected = values.map(roundToHalf);
    expect([...(await half.download())]).toEqual(expected);
    expect([...(await back.download())]).toEqual(expected);
    expect(roundToHalf(1 + 2 ** -11)).toBe(1); // tie to even
    expect(roundToHalf(70000)).toBe(65504);
    const big = halfValues(4099, 11, 100);
    expectClose(
      await cast(Tensor.upload(d, Float32Array.from(big), [4099]), "f16").download(),
      big,
      { atol: 0, rtol: 0 },
      "cast 4099",
    );
  });

  const unaryKinds: [UnaryKind, (x: Tensor) => Tensor, number][] = [
    ["relu", relu, 1],
    ["silu", silu, 1],
    ["gelu", gelu, 1],
    ["sigmoid", sigmoidOp, 1],
    ["tanh", tanh, 1],
    ["scale", (x) => scale(x, -0.37), -0.37],
  ];
  for (const [kind, op, alpha] of unaryKinds) {
    itHalf(`unary ${kind} over sizes 1, 33, 1025`, async () => {
      for (const size of [1, 33, 1025]) {
        const xs = halfValues(size, 3 + size, 3);
        const y = op(uploadHalf(device!, xs, [size]));
        expect(y.dtype).toBe("f16");
        const expected = unaryReference.forward(kind, xs, alpha);
        expectClose(await y.download(), expected, halfTolerance(0, 0, 2e-6), `${kind} [${size}]`);
      }
    });
  }

  const binaryCases: [string, (a: Tensor, b: Tensor) => Tensor, Shape, Shape][] = [
    ["add", add, [2, 3, 5, 7], [3, 1, 1]],
    ["add", add, [1], [1]],
    ["mul", mul, [2, 33], [2, 33]],
    ["mul", mul, [4, 1, 6], [1, 5, 1]],
    ["sub", sub, [3, 1025], [1025]],
    ["div", div, [2, 3, 4], [2, 3, 1]],
  ];
  for (const [kind, op, aShape, bShape] of binaryCases) {
    itHalf(`binary ${kind} [${aShape}] with [${bShape}] (broadcast)`, async () => {
      const a = halfValues(
        aShape.reduce((p, v) => p * v, 1),
        5,
        2,
      );
      const b = halfValues(
        bShape.reduce((p, v) => p * v, 1),
        6,
        2,
      ).map((v) => (kind === "div" ? v + Math.sign(v) * 0.5 : v));
      const bHalf = roundAllToHalf(b);
      const y = op(uploadHalf(device!, a, aShape), uploadHalf(device!, bHalf, bShape));
      const expected = binaryReference.forward(kind as "add", a, aShape, bHalf, bShape);
      expectClose(await y.download(), expected, halfTolerance(1, 0), `${kind}`);
    });
  }

  itHalf("layout: concat, split, permute and upsampleNearest copy exactly", async () => {
    const d = device!;
    const a = halfValues(30, 1);
    const b = halfValues(10, 2);
    const joined = concat([uploadHalf(d, a, [2, 3, 5]), uploadHalf(d, b, [2, 1, 5])], 1);
    expect(joined.shape).toEqual([2, 4, 5]);
    const joinedExpected = layoutReference.concat(
      [a, b],
      [
        [2, 3, 5],
        [2, 1, 5],
      ],
      1,
    );
    expectClose(await joined.download(), joinedExpected, { atol: 0, rtol: 0 }, "concat");
    const [first, second] = split(joined, [3, 1], 1);
    expectClose(await first.download(), a, { atol: 0, rtol: 0 }, "split 0");
    expectClose(await second.download(), b, { atol: 0, rtol: 0 }, "split 1");
    const lastAxis = split(uploadHalf(d, a, [2, 3, 5]), [1, 4], -1);
    expect(lastAxis.map((t) => t.shape)).toEqual([
      [2, 3, 1],
      [2, 3, 4],
    ]);
    const x = halfValues(120, 3);
    for (const permutation of [
      [0, 2, 1, 3],
      [3, 1, 0, 2],
      [0, 1, 2, 3],
    ]) {
      const y = permute(uploadHalf(d, x, [2, 3, 4, 5]), permutation);
      expectClose(
        await y.download(),
        layoutReference.permute(x, [2, 3, 4, 5], permutation),
        { atol: 0, rtol: 0 },
        `permute ${permutation}`,
      );
    }
    for (const factor of [1, 2, 3]) {
      const image = halfValues(105, 4);
      const y = upsampleNearest(uploadHalf(d, image, [1, 3, 5, 7]), factor);
      expect(y.shape).toEqual([1, 3, 5 * factor, 7 * factor]);
      expectClose(
        await y.download(),
        layoutReference.upsampleNearest(image, [1, 3, 5, 7], factor),
        { atol: 0, rtol: 0 },
        `upsample x${factor}`,
      );
    }
  });

  const groupNormCases: [Shape, number, boolean][] = [
    [[2, 6, 5, 7], 3, true],
    [[1, 32, 1, 1], 32, true], // one value per group: (x - mean) = 0, y = beta
    [[2, 4, 33, 33], 2, true], // spans of 2178 values, more than the 64 lanes
    [[3, 5, 7], 5, false],
  ];
  for (const [shape, groups, affine] of groupNormCases) {
    itHalf(
      `groupNorm [${shape}] groups ${groups}${affine ? "" : " without gamma/beta"}: f32 statistics`,
      async () => {
        const d = device!;
        const size = shape.reduce((p, v) => p * v, 1);
        // An offset of 40 makes E[x^2] - E[x]^2 cancel in f32; the two-pass variance does not.
        const xs = roundAllToHalf(randomValues(size, 7, 2).map((v) => v + 40));
        const channels = shape[1];
        const gamma = affine ? halfValues(channels, 8) : null;
        const beta = affine ? halfValues(channels, 9) : null;
        const y = groupNorm(
          uploadHalf(d, xs, shape),
          groups,
          gamma ? uploadHalf(d, gamma, [channels]) : null,
          beta ? uploadHalf(d, beta, [channels]) : null,
          1e-5,
        );
        expect(y.dtype).toBe("f16");
        const expected = groupNormReference.forward(xs, shape, groups, gamma, beta, 1e-5).y;
        const span = size / (shape[0] * groups);
        expectClose(await y.download(), expected, halfTolerance(span, 4 * 3, 1e-6), `groupNorm [${shape}]`);
      },
    );
  }

  const layerNormCases: [Shape, boolean][] = [
    [[5, 7], true],
    [[1, 1], true],
    [[3, 77, 320], true],
    [[2, 9, 65], false],
  ];
  for (const [shape, affine] of layerNormCases) {
    itHalf(`layerNorm [${shape}]${affine ? "" : " without gamma/beta"}: f32 statistics`, async () => {
      const d = device!;
      const size = shape.reduce((p, v) => p * v, 1);
      const width = shape.at(-1)!;
      const xs = roundAllToHalf(randomValues(size, 12, 3).map((v) => v - 25));
      const gamma = affine ? halfValues(width, 13) : null;
      const beta = affine ? halfValues(width, 14) : null;
      const y = layerNorm(
        uploadHalf(d, xs, shape),
        gamma ? uploadHalf(d, gamma, [width]) : null,
        beta ? uploadHalf(d, beta, [width]) : null,
        1e-5,
      );
      const expected = layerNormReference.forward(xs, width, gamma, beta, 1e-5).y;
      expectClose(await y.download(), expected, halfTolerance(width, 4 * 3, 1e-6), `layerNorm [${shape}]`);
    });
  }

  const matmulCases: {
    a: Shape;
    b: Shape;
    transposeA?: boolean;
    transposeB?: boolean;
    bias?: boolean;
    activation?: "gelu" | "relu" | "silu";
  }[] = [
    { a: [1, 1], b: [1, 1] },
    { a: [5, 7], b: [7, 3] },
    { a: [2, 77, 40], b: [33, 40], transposeB: true, bias: true }, // Linear on CLIP tokens
    { a: [9, 5], b: [9, 6], transposeA: true },
    { a: [3, 5, 9], b: [3, 9, 6] },
    { a: [2, 3, 4, 7], b: [7, 5], bias: true, activation: "gelu" },
    { a: [6, 1], b: [1, 13], bias: true, activation: "silu" },
    { a: [4, 1024], b: [1024, 5], activation: "relu" },
  ];
  for (const c of matmulCases) {
    const label = `matmul [${c.a}]${c.transposeA ? "^T" : ""} x [${c.b}]${c.transposeB ? "^T" : ""}${c.bias ? " + bias" : ""}${c.activation ? ` ${c.activation}` : ""}`;
    itHalf(label, async () => {
      const d = device!;
      const a = halfValues(
        c.a.reduce((p, v) => p * v, 1),
        21,
      );
      const b = halfValues(
        c.b.reduce((p, v) => p * v, 1),
        22,
      );
      const options = { transposeA: c.transposeA, transposeB: c.transposeB, activation: c.activation };
      const N = c.transposeB ? c.b.at(-2)! : c.b.at(-1)!;
      const K = c.transposeA ? c.a.at(-2)! : c.a.at(-1)!;
      const bias = c.bias ? halfValues(N, 23) : null;
      const y = matmul(uploadHalf(d, a, c.a), uploadHalf(d, b, c.b), {
        ...options,
        bias: bias ? uploadHalf(d, bias, [N]) : null,
      });
      expect(y.dtype).toBe("f16");
      const expected = matmulReference.forward(a, c.a, b, c.b, { ...options, bias });
      const magnitude = maxAbs(a) * maxAbs(b);
      expectClose(
        await y.download(),
        expected,
        halfTolerance(K + 1, magnitude, c.activation ? 2e-6 : 0),
        label,
      );
    });
  }

  itHalf("Linear built with withParameterDtype('f16') runs the f16 matmul and is not trainable", async () => {
    const d = device!;
    const layer = withParameterDtype("f16", () => new Linear(d, 40, 24, new ParameterInit(5)));
    expect(layer.weight.dtype).toBe("f16");
    expect(layer.weight.requiresGrad).toBe(false);
    const reference = new Linear(d, 40, 24, new ParameterInit(5));
    expect(reference.weight.dtype).toBe("f32");
    const xs = halfValues(3 * 40, 31);
    const y = layer.forward(uploadHalf(d, xs, [3, 40])); // outside noGrad: nothing to record
    const w = roundAllToHalf(await reference.weight.download());
    const bias = roundAllToHalf(await reference.bias!.download());
    const expected = matmulReference.forward(xs, [3, 40], w, [24, 40], { transposeB: true, bias });
    expectClose(await y.download(), expected, halfTolerance(41, maxAbs(xs)), "Linear f16");
    layer.dispose();
    reference.dispose();
  });

  const convCases: {
    x: Shape;
    w: Shape;
    stride?: number | [number, number];
    padding?: number | [number, number];
    dilation?: number;
    groups?: number;
    bias?: boolean;
  }[] = [
    { x: [1, 2, 5, 5], w: [3, 2, 3, 3], padding: 1, bias: true },
    { x: [2, 3, 9, 7], w: [4, 3, 3, 3], stride: 2, padding: 1, bias: true }, // odd sizes, stride 2
    { x: [1, 4, 11, 10], w: [6, 2, 3, 3], dilation: 2, groups: 2, padding: 2 },
    { x: [1, 8, 6, 6], w: [5, 8, 1, 1], bias: true }, // 1x1
    { x: [1, 3, 17, 13], w: [4, 3, 7, 7], stride: 2, padding: 3 }, // DenseNet-stem shape, small
    { x: [1, 1, 1, 1], w: [1, 1, 1, 1] },
    { x: [2, 5, 4, 1], w: [3, 5, 2, 1], stride: [1, 1], padding: [1, 0] }, // one column, 2x1 kernel
    { x: [1, 64, 16, 16], w: [32, 64, 3, 3], padding: 1, bias: true }, // 576 terms per output
  ];
  for (const c of convCases) {
    const label = `conv2d x [${c.x}] w [${c.w}] stride ${c.stride ?? 1} pad ${c.padding ?? 0} dil ${c.dilation ?? 1} groups ${c.groups ?? 1}`;
    itHalf(label, async () => {
      const d = device!;
      const xs = halfValues(
        c.x.reduce((p, v) => p * v, 1),
        41,
      );
      const ws = halfValues(
        c.w.reduce((p, v) => p * v, 1),
        42,
        0.5,
      );
      const bias = c.bias ? halfValues(c.w[0], 43) : null;
      const options = { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups };
      const y = conv2d(
        uploadHalf(d, xs, c.x),
        uploadHalf(d, ws, c.w),
        bias ? uploadHalf(d, bias, [c.w[0]]) : null,
        options,
      );
      expect(y.dtype).toBe("f16");
      const expected = conv2dReference.forward(xs, c.x, ws, c.w, bias, options);
      const terms = c.w[1] * c.w[2] * c.w[3] + 1;
      expectClose(await y.download(), expected, halfTolerance(terms, maxAbs(xs) * maxAbs(ws)), label);
    });
  }

  const attentionCases: {
    shape: [number, number, number, number, number];
    scale?: number;
    mask?: "some" | "batch";
  }[] = [
    { shape: [1, 1, 1, 1, 1] },
    { shape: [1, 2, 1, 77, 7] }, // one query x CLIP tokens, odd D
    { shape: [2, 1, 77, 1, 40] }, // one key
    { shape: [1, 2, 65, 65, 64], scale: 0.3 },
    { shape: [2, 1, 17, 77, 160] }, // cross-attention at D = 160
    { shape: [2, 2, 33, 20, 64], mask: "some" },
    { shape: [2, 3, 9, 13, 8], mask: "batch" }, // batch 1 fully masked: zeros
    { shape: [1, 1, 5, 9, 256] }, // the largest head dimension
  ];
  for (const c of attentionCases) {
    const [batch, heads, queryLength, keyLength, headDim] = c.shape;
    const label = `attention [B, H, Lq, Lk, D] = [${c.shape}]${c.scale ? ` scale ${c.scale}` : ""}${c.mask ? ` mask ${c.mask}` : ""}: f32 softmax`;
    itHalf(label, async () => {
      const d = device!;
      const q = halfValues(batch * heads * queryLength * headDim, 51, 1.5);
      const k = halfValues(batch * heads * keyLength * headDim, 52, 1.5);
      const v = halfValues(batch * heads * keyLength * headDim, 53);
      let mask: Float64Array | undefined;
      if (c.mask) {
        mask = new Float64Array(batch * keyLength).fill(1);
        for (let index = 0; index < mask.length; index++) {
          if (c.mask === "some" ? index % 3 === 1 : index >= keyLength) mask[index] = 0;
        }
      }
      const y = attention(
        uploadHalf(d, q, [batch, heads, queryLength, headDim]),
        uploadHalf(d, k, [batch, heads, keyLength, headDim]),
        uploadHalf(d, v, [batch, heads, keyLength, headDim]),
        {
          scale: c.scale,
          keyMask: mask ? Tensor.upload(d, Float32Array.from(mask), [batch, keyLength]) : undefined,
        },
      );
      expect(y.dtype).toBe("f16");
      const shape = { batch, heads, queryLength, keyLength, headDim };
      const expected = attentionReference.forward(q, k, v, shape, { scale: c.scale, keyMask: mask }).output;
      const got = await y.download();
      expectClose(got, expected, halfTolerance(headDim + keyLength, maxAbs(v), 1e-6), label);
      if (c.mask === "batch") {
        const half = heads * queryLength * headDim;
        expect([...got.slice(half)].every((value) => value === 0)).toBe(true);
      }
    });
  }

  const softmaxCases: { shape: Shape; axis: number; scale?: number; mask?: "causal" | "some" }[] = [
    { shape: [1, 1], axis: -1 },
    { shape: [3, 7], axis: -1, scale: 0.125 },
    { shape: [2, 5, 3], axis: 1 }, // rows along a middle axis (stride 3)
    { shape: [2, 1025], axis: -1, scale: 2 }, // a long row: the f32 sum over 1025 terms
    { shape: [6, 2, 2, 6], axis: -1, scale: 0.3, mask: "causal" }, // CLIP's [L, B, H, L] causal view
    { shape: [2, 3, 9], axis: -1, mask: "some" }, // row 0 of the mask keeps nothing: zeros
  ];
  for (const c of softmaxCases) {
    const label = `softmax [${c.shape}] axis ${c.axis}${c.scale ? ` scale ${c.scale}` : ""}${c.mask ? ` mask ${c.mask}` : ""}: f32 max and sum`;
    itHalf(label, async () => {
      const d = device!;
      const size = c.shape.reduce((p, v) => p * v, 1);
      const xs = halfValues(size, 61, 4);
      const length = c.shape.at(c.axis)!;
      let mask: Float64Array | undefined;
      if (c.mask === "causal") {
        mask = new Float64Array(length * length);
        for (let i = 0; i < length; i++) for (let j = 0; j <= i; j++) mask[i * length + j] = 1;
      } else if (c.mask === "some") {
        mask = Float64Array.from({ length: c.shape[0] * length }, (_, index) =>
          index >= length && index % 2 === 0 ? 1 : 0,
        );
      }
      const y = softmax(uploadHalf(d, xs, c.shape), c.axis, {
        scale: c.scale,
        mask: mask ? Tensor.upload(d, Float32Array.from(mask), [c.shape[0], length]) : undefined,
      });
      expect(y.dtype).toBe("f16");
      const expected = softmaxReference.forward(xs, c.shape, c.axis, { scale: c.scale, mask });
      const got = await y.download();
      expectClose(got, expected, halfTolerance(length, 1, 2e-6), label);
      if (c.mask === "some") expect([...got.slice(0, 3 * length)].every((value) => value === 0)).toBe(true);
    });
  }

  itHalf("embedding: an f16 table gives its rows exactly, for ids of any shape", async () => {
    const d = device!;
    const [vocabulary, dim] = [11, 7];
    const table = halfValues(vocabulary * dim, 71, 3);
    for (const tokens of [[4], [0, 10, 3, 3, 7, 1]]) {
      const ids = Tensor.upload(d, tokens, tokens.length === 1 ? [1] : [2, 3], "u32");
      const y = embedding(uploadHalf(d, table, [vocabulary, dim]), ids);
      expect(y.dtype).toBe("f16");
      expect(y.shape).toEqual([...ids.shape, dim]);
      expectClose(
        await y.download(),
        embeddingReference.forward(table, dim, tokens),
        { atol: 0, rtol: 0 },
        `embedding ${tokens.length} ids`,
      );
    }
  });

  itHalf("attentionComposed with f16 q, k, v (the VAE's 512-wide head): f16 matmul and softmax", async () => {
    const d = device!;
    for (const [batch, heads, queryLength, keyLength, headDim] of [
      [1, 1, 9, 9, 512],
      [2, 1, 5, 3, 33],
    ]) {
      const q = halfValues(batch * heads * queryLength * headDim, 81, 0.25);
      const k = halfValues(batch * heads * keyLength * headDim, 82, 0.25);
      const v = halfValues(batch * heads * keyLength * headDim, 83);
      const y = noGrad(() =>
        attentionComposed(
          uploadHalf(d, q, [batch, heads, queryLength, headDim]),
          uploadHalf(d, k, [batch, heads, keyLength, headDim]),
          uploadHalf(d, v, [batch, heads, keyLength, headDim]),
        ),
      );
      expect(y.dtype).toBe("f16");
      const shape = { batch, heads, queryLength, keyLength, headDim };
      const expected = attentionReference.forward(q, k, v, shape, {}).output;
      // The scores and probabilities are stored in f16 between the parts: each a 2^-11 rounding.
      // A score s rounded by |s| 2^-11 moves its probability by p |s| 2^-11 relative, so the
      // output moves by up to max|s| 2^-11 sum_j p_j |v_j| (+ the probabilities' own rounding).
      const scores = maxAbs(q) * maxAbs(k) * headDim * (1 / Math.sqrt(headDim));
      const tolerance = halfTolerance(
        headDim + keyLength,
        maxAbs(v),
        2 ** -11 * (2 * scores + 1) * maxAbs(v),
      );
      expectClose(await y.download(), expected, tolerance, `attentionComposed f16 [${shape.headDim}]`);
    }
    const half = Tensor.zeros(d, [1, 1, 2, 4], "f16");
    expect(() => attentionComposed(half, Tensor.zeros(d, [1, 1, 2, 4]), half)).toThrow(
      "attentionComposed: f16 q needs f16 k, got f32",
    );
  });

  itHalf("f16 operands must all be f16: a mixed call names the operand and says to cast", async () => {
    const d = device!;
    const x = Tensor.upload(d, new Float32Array(50), [1, 2, 5, 5], "f16");
    const w = Tensor.upload(d, new Float32Array(54), [3, 2, 3, 3]);
    expect(() => conv2d(x, w)).toThrow(
      "conv2d: f16 x needs f16 w, got f32 (cast it first) (x: [1, 2, 5, 5], w: [3, 2, 3, 3])",
    );
    const a = Tensor.zeros(d, [2, 3], "f16");
    expect(() => matmul(a, Tensor.zeros(d, [3, 4]))).toThrow(
      "matmul: f16 a needs f16 b, got f32 (cast it first)",
    );
    expect(() => add(a, Tensor.zeros(d, [2, 3]))).toThrow("add: f16 a needs f16 b, got f32");
    expect(() => add(Tensor.zeros(d, [2, 3]), a)).toThrow("add: f16 b needs f16 a, got f32");
    expect(() => groupNorm(Tensor.zeros(d, [1, 4, 2], "f16"), 2, Tensor.zeros(d, [4]))).toThrow(
      "groupNorm: f16 x needs f16 gamma, got f32",
    );
    expect(() => conv2d(x, Tensor.zeros(d, [3, 2, 3, 3], "f16"), null, { variant: "naive" })).toThrow(
      'conv2d: variant "naive" is f32 only',
    );
    expect(() => split(Tensor.zeros(d, [2, 5], "f16"), [2, 2], 1)).toThrow(
      "split: sizes [2, 2] do not partition axis 1",
    );
    expect(() => softmax(Tensor.zeros(d, [2, 5], "f16"), -1, { variant: "cpu-rows" })).toThrow(
      'softmax: variant "cpu-rows" is f32 only',
    );
  });

  itHalf(
    "f16 kernels are inference only: a tensor that needs a gradient is refused outside noGrad",
    async () => {
      const d = device!;
      const x = Tensor.zeros(d, [2, 3], "f16").trainable();
      expect(() => silu(x)).toThrow(
        "silu: the f16 kernels are inference only (no backward): run under noGrad(), or train in f32",
      );
      expect(() => cast(Tensor.zeros(d, [2]).trainable(), "f16")).toThrow("cast: is inference only");
      const y = noGrad(() => silu(x));
      expect(y.dtype).toBe("f16");
    },
  );

  itHalf("cxr kernels dump <op> --variant f16 prints the WGSL that runs, each with `enable f16;`", () => {
    for (const op of [
      "conv2d",
      "matmul",
      "softmax",
      "embedding",
      "attention",
      "groupNorm",
      "layerNorm",
      "unary",
      "binary",
      "layout",
      "cast",
    ]) {
      const variant = op === "cast" ? "default" : "f16";
      const text = dumpKernelSources({ op, variant });
      expect(text, op).toContain("enable f16;");
      expect(text, op).toContain("array<f16>");
    }
    expect(dumpKernelSources({ op: "layout", variant: "f16", pass: "permute" })).not.toContain("array<f32>");
  });
});

describe("an adapter without shader-f16 (fake feature set)", () => {
  it("refuses f16 tensors, casts, f16 parameters and the f16 kernels with a clear message", async () => {
    const device = await gpu();
    const fake = withoutHalf(device);
    expect(fake.features.has("shader-f16")).toBe(false);
    expect(() => Tensor.upload(fake, [1, 2], [2], "f16")).toThrow("needs the adapter feature 'shader-f16'");
    const x = Tensor.upload(fake, [1, 2], [2]);
    expect(() => cast(x, "f16")).toThrow(
      /^cast: f16 kernels need the adapter feature 'shader-f16', which .* lacks; use f32 \(--precision f32\)/,
    );
    expect(await cast(x, "f32").download()).toEqual(Float32Array.from([1, 2])); // f32 -> f32 needs no f16
    expect(() => withParameterDtype("f16", () => new Linear(fake, 2, 2, new ParameterInit(1)))).toThrow(
      "needs the adapter feature 'shader-f16'",
    );
    expect(() => requireHalfAdapter("conv2d", fake)).toThrow(
      "conv2d: f16 kernels need the adapter feature 'shader-f16'",
    );
    x.release();
  });
});
