import {
  backward,
  CONV2D_VARIANTS,
  type Conv2dOptions,
  type Conv2dVariant,
  chooseConv2dVariant,
  conv2d,
  conv2dBackwardBias,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dCost,
  conv2dGeometry,
  conv2dReference,
  noGrad,
  type Shape,
  sizeOf,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import {
  asFloat32,
  expectClose,
  finiteDifferenceGradient,
  gpu,
  randomValues,
  type Tolerance,
  upload,
} from "./helpers.ts";

interface ConvCase {
  why: string;
  x: Shape;
  w: Shape;
  options: Conv2dOptions;
  bias?: boolean;
}

/** Awkward shapes for every variant: size 1, odd sizes, non-multiples of the 8x8 and 64x64 blocks. */
const CASES: ConvCase[] = [
  { why: "3x3 pad 1, odd sizes", x: [2, 5, 7, 9], w: [6, 5, 3, 3], options: { padding: 1 }, bias: true },
  { why: "stride 2 on odd sizes", x: [1, 3, 9, 8], w: [10, 3, 3, 3], options: { stride: 2, padding: 1 } },
  {
    why: "groups 2 and dilation 2",
    x: [2, 6, 8, 7],
    w: [4, 3, 3, 3],
    options: { groups: 2, dilation: 2, padding: 2 },
    bias: true,
  },
  {
    why: "depthwise (groups = channels)",
    x: [1, 4, 6, 5],
    w: [8, 1, 3, 3],
    options: { groups: 4, padding: 1 },
  },
  { why: "1x1 (plain GEMM over channels)", x: [2, 13, 5, 6], w: [9, 13, 1, 1], options: {}, bias: true },
  { why: "1x1 stride 2 (not the fast path)", x: [1, 6, 7, 5], w: [5, 6, 1, 1], options: { stride: 2 } },
  {
    why: "7x7 stride 2 pad 3 (DenseNet stem)",
    x: [1, 3, 23, 21],
    w: [9, 3, 7, 7],
    options: { stride: 2, padding: 3 },
  },
  { why: "size 1 everywhere", x: [1, 1, 1, 1], w: [1, 1, 1, 1], options: {}, bias: true },
  { why: "one-row image, 3x3 pad 1", x: [1, 2, 1, 5], w: [3, 2, 3, 3], options: { padding: 1 } },
  {
    why: "per-axis stride, padding and dilation, 2x3 kernel",
    x: [2, 3, 6, 7],
    w: [4, 3, 2, 3],
    options: { stride: [2, 1], padding: [0, 2], dilation: [1, 2] },
    bias: true,
  },
  {
    why: "stride 3 on a 1x2 image (stride phases with no pixels)",
    x: [2, 3, 1, 2],
    w: [2, 3, 1, 1],
    options: { stride: 3 },
    bias: true,
  },
  { why: "kernel as large as the input", x: [1, 2, 5, 5], w: [3, 2, 5, 5], options: {} },
  {
    why: "stride larger than the kernel",
    x: [1, 3, 10, 11],
    w: [4, 3, 2, 2],
    options: { stride: 3, padding: 1 },
  },
  {
    why: "larger: 32 -> 24 channels at 16x16",
    x: [2, 32, 16, 16],
    w: [24, 32, 3, 3],
    options: { padding: 1 },
    bias: true,
  },
];

/**
 * f32 sums of `terms` unit-scale products: partial sums grow like sqrt(terms) and each add rounds at
 * that scale, so a sequential (naive) sum drifts like eps * terms; blocked and split sums do better.
 */
function tolerance(terms: number): Tolerance {
  return { atol: 1.2e-7 * terms + 1e-6, rtol: 1e-5 };
}

describe.each(CONV2D_VARIANTS)("conv2d variant %s", (variant: Conv2dVariant) => {
  it.each(CASES)("$why: forward and gradients match the float64 reference", async (testCase) => {
    const options = { ...testCase.options, variant };
    const g = conv2dGeometry("test", testCase.x, testCase.w, options);
    const outShape = [g.batch, g.outChannels, g.outHeight, g.outWidth];
    const seed = sizeOf(testCase.x) + sizeOf(testCase.w);
    const x = asFloat32(randomValues(sizeOf(testCase.x), seed + 1));
    const w = asFloat32(randomValues(sizeOf(testCase.w), seed + 2));
    const b = testCase.bias ? asFloat32(randomValues(g.outChannels, seed + 3)) : null;
    const gy = asFloat32(randomValues(sizeOf(outShape), seed + 4));
    const xTensor = await upload(x, testCase.x, true);
    const wTensor = await upload(w, testCase.w, true);
    const bTensor = b ? await upload(b, [g.outChannels], true) : null;
    const y = conv2d(xTensor, wTensor, bTensor, options);
    expect(y.shape).toEqual(outShape);
    const forwardTerms = g.inPerGroup * g.kernelHeight * g.kernelWidth;
    expectClose(
      await y.download(),
      conv2dReference.forward(x, testCase.x, w, testCase.w, b, options),
      tolerance(forwardTerms),
      `${variant} forward`,
    );
    backward(y, await upload(gy, outShape));
    expectClose(
      await xTensor.grad!.download(),
      conv2dReference.backwardInput(gy, testCase.x, w, testCase.w, options),
      tolerance(g.outPerGroup * g.kernelHeight * g.kernelWidth),
      `${variant} gradient of x`,
    );
    expectClose(
      await wTensor.grad!.download(),
      conv2dReference.backwardWeight(gy, x, testCase.x, testCase.w, options),
      tolerance(g.batch * g.outHeight * g.outWidth),
      `${variant} gradient of w`,
    );
    if (bTensor && b) {
      expectClose(
        await bTensor.grad!.download(),
        conv2dReference.backwardBias(gy, outShape),
        tolerance(g.batch * g.outHeight * g.outWidth),
        `${variant} gradient of bias`,
      );
    }
    for (const tensor of [xTensor, wTensor, bTensor, y]) tensor?.release();
  });
});

describe.each(CONV2D_VARIANTS)(
  "conv2d at the benchmark's image size, variant %s",
  (variant: Conv2dVariant) => {
    it("matches the reference on 8 -> 16 channels at 64x64, the weight gradient split into chunks", async () => {
      // N*OH*OW = 8192 pixels: the weight gradient is split into chunks on every variant.
      const xShape = [2, 8, 64, 64];
      const wShape = [16, 8, 3, 3];
      const x = asFloat32(randomValues(sizeOf(xShape), 71));
      const w = asFloat32(randomValues(sizeOf(wShape), 72));
      const gy = asFloat32(randomValues(2 * 16 * 64 * 64, 73));
      const options = { padding: 1, variant };
      const xTensor = await upload(x, xShape);
      const wTensor = await upload(w, wShape);
      const gyTensor = await upload(gy, [2, 16, 64, 64]);
      expectClose(
        await conv2d(xTensor, wTensor, null, options).download(),
        conv2dReference.forward(x, xShape, w, wShape, null, options),
        tolerance(72),
        "forward",
      );
      expectClose(
        await conv2dBackwardWeight(gyTensor, xTensor, wShape, options).download(),
        conv2dReference.backwardWeight(gy, x, xShape, wShape, options),
        tolerance(8192),
        "gradient of w",
      );
      expectClose(
        await conv2dBackwardInput(gyTensor, wTensor, xShape, options).download(),
        conv2dReference.backwardInput(gy, xShape, w, wShape, options),
        tolerance(144),
        "gradient of x",
      );
    });
  },
);

describe("conv2d reference", () => {
  const cases: ConvCase[] = [
    { why: "3x3 pad 1", x: [1, 2, 4, 3], w: [3, 2, 3, 3], options: { padding: 1 } },
    {
      why: "stride 2, dilation 2, groups 2",
      x: [2, 4, 5, 5],
      w: [2, 2, 2, 2],
      options: { stride: 2, dilation: 2, groups: 2 },
    },
  ];
  it.each(cases)("$why: reference gradients agree with finite differences", (testCase) => {
    const g = conv2dGeometry("test", testCase.x, testCase.w, testCase.options);
    const outShape = [g.batch, g.outChannels, g.outHeight, g.outWidth];
    const x = randomValues(sizeOf(testCase.x), 11);
    const w = randomValues(sizeOf(testCase.w), 12);
    const b = randomValues(g.outChannels, 13);
    const gy = randomValues(sizeOf(outShape), 14);
    const f = ([xs, ws, bs]: Float64Array[]) =>
      conv2dReference.forward(xs, testCase.x, ws, testCase.w, bs, testCase.options);
    const fd = { atol: 1e-7, rtol: 1e-6 };
    expectClose(
      conv2dReference.backwardInput(gy, testCase.x, w, testCase.w, testCase.options),
      finiteDifferenceGradient(f, [x, w, b], gy, 0),
      fd,
      "fd x",
    );
    expectClose(
      conv2dReference.backwardWeight(gy, x, testCase.x, testCase.w, testCase.options),
      finiteDifferenceGradient(f, [x, w, b], gy, 1),
      fd,
      "fd w",
    );
    expectClose(
      conv2dReference.backwardBias(gy, outShape),
      finiteDifferenceGradient(f, [x, w, b], gy, 2),
      fd,
      "fd b",
    );
  });

  it("matches a hand-computed 2x2 example", () => {
    // x = [[1, 2], [3, 4]], w = [[1, 0], [0, -1]], padding 0: one output 1*1 + 4*(-1) = -3, plus bias 0.5.
    const y = conv2dReference.forward(
      Float64Array.from([1, 2, 3, 4]),
      [1, 1, 2, 2],
      Float64Array.from([1, 0, 0, -1]),
      [1, 1, 2, 2],
      Float64Array.from([0.5]),
    );
    expect(Array.from(y)).toEqual([-2.5]);
  });
});

describe("conv2d variants and costs", () => {
  it("picks cpu-texture on a CPU adapter and gpu-tiled elsewhere", async () => {
    const device = await gpu();
    const g = conv2dGeometry("test", [8, 128, 64, 64], [128, 128, 3, 3], { padding: 1 });
    expect(chooseConv2dVariant(device, g)).toBe(device.kind === "cpu" ? "cpu-texture" : "gpu-tiled");
  });

  it("counts 2 FLOPs per multiply-add", () => {
    const g = conv2dGeometry("test", [8, 128, 64, 64], [128, 128, 3, 3], { padding: 1 });
    expect(conv2dCost(g).flops).toBe(2 * 8 * 128 * 64 * 64 * 128 * 9);
  });

  it("records nothing under noGrad and only the needed gradients otherwise", async () => {
    const x = await upload(randomValues(2 * 3 * 4 * 4, 1), [2, 3, 4, 4]);
    const w = await upload(randomValues(5 * 3 * 3 * 3, 2), [5, 3, 3, 3], true);
    const y0 = noGrad(() => conv2d(x, w, null, { padding: 1 }));
    expect(y0.requiresGrad).toBe(false);
    const y = conv2d(x, w, null, { padding: 1 });
    backward(y, await upload(randomValues(2 * 5 * 4 * 4, 3), [2, 5, 4, 4]));
    expect(x.grad).toBeNull();
    expect(w.grad?.shape).toEqual([5, 3, 3, 3]);
  });
});

describe("conv2d rejects bad input", () => {
  it("names the op and the shapes", async () => {
    const x = await upload(randomValues(2 * 4 * 5 * 5, 1), [2, 4, 5, 5]);
    const w = await upload(randomValues(6 * 3 * 3 * 3, 2), [6, 3, 3, 3]);
    expect(() => conv2d(x, w)).toThrow(
      "conv2d: input has 4 channels but the weight expects 3 x 1 groups (x: [2, 4, 5, 5], w: [6, 3, 3, 3])",
    );
    const w2 = await upload(randomValues(6 * 2 * 3 * 3, 3), [6, 2, 3, 3]);
    expect(() => conv2d(x, w2, null, { groups: 4 })).toThrow(
      "conv2d: input has 4 channels but the weight expects 2 x 4 groups",
    );
    const w5 = await upload(randomValues(5 * 1 * 3 * 3, 4), [5, 1, 3, 3]);
    expect(() => conv2d(x, w5, null, { groups: 4 })).toThrow(
      "conv2d: 5 output channels are not divisible by 4 groups",
    );
    const big = await upload(randomValues(6 * 4 * 7 * 7, 5), [6, 4, 7, 7]);
    expect(() => conv2d(x, big)).toThrow("conv2d: the dilated kernel is larger than the padded input");
    const bias = await upload([1, 2, 3], [3]);
    const w4 = await upload(randomValues(6 * 4 * 3 * 3, 6), [6, 4, 3, 3]);
    expect(() => conv2d(x, w4, bias)).toThrow(
      "conv2d: bias must be [6] (x: [2, 4, 5, 5], w: [6, 4, 3, 3], bias: [3])",
    );
    expect(() => conv2d(x, w4, null, { stride: 0 })).toThrow("conv2d: stride must be an integer >= 1");
    expect(() => conv2d(x, w4, null, { padding: [1, -1] })).toThrow(
      "conv2d: padding must be an integer >= 0",
    );
    expect(() => conv2d(x, w4, null, { variant: "fast" as Conv2dVariant })).toThrow(
      'conv2d: unknown variant "fast"',
    );
    const flat = await upload([1, 2, 3, 4], [2, 2]);
    expect(() => conv2d(flat, w4)).toThrow("conv2d: input must be [N, C, H, W] (x: [2, 2], w: [6, 4, 3, 3])");
  });

  it("checks the gradient's shape and the dtype", async () => {
    const device = await gpu();
    const x = await upload(randomValues(1 * 2 * 5 * 5, 1), [1, 2, 5, 5]);
    const w = await upload(randomValues(3 * 2 * 3 * 3, 2), [3, 2, 3, 3]);
    const wrong = await upload(randomValues(1 * 3 * 5 * 5, 3), [1, 3, 5, 5]);
    expect(() => conv2dBackwardInput(wrong, w, [1, 2, 5, 5])).toThrow(
      "conv2dBackwardInput: gradOutput must be [1, 3, 3, 3] (gradOutput: [1, 3, 5, 5], w: [3, 2, 3, 3])",
    );
    expect(() => conv2dBackwardWeight(wrong, x, [3, 2, 3, 3])).toThrow(
      "conv2dBackwardWeight: gradOutput must be [1, 3, 3, 3] (gradOutput: [1, 3, 5, 5], x: [1, 2, 5, 5])",
    );
    const flat = await upload([1, 2], [2]);
    expect(() => conv2dBackwardBias(flat)).toThrow(
      "conv2dBackwardBias: gradOutput must be [N, O, OH, OW] (gradOutput: [2])",
    );
    if (device.features.has("shader-f16")) {
      const half = Tensor.upload(device, new Float32Array(50), [1, 2, 5, 5], "f16");
      expect(() => conv2d(half, w)).toThrow("conv2d: needs f32 x, got f16");
    }
  });

  it("refuses an output larger than the adapter's largest buffer", async () => {
    const device = await gpu();
    const limit = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    const x = await upload([1], [1, 1, 1, 1]);
    const w = await upload([1], [1, 1, 1, 1]);
    // Padding p makes a (1 + 2p)^2 output; pick p so it needs more bytes than one buffer holds.
    const padding = Math.ceil(Math.sqrt(limit / 4) / 2) + 1;
    const side = 1 + 2 * padding;
    expect(() => conv2d(x, w, null, { padding })).toThrow(
      `conv2d: output [1, 1, ${side}, ${side}] needs ${4 * side * side} bytes, more than this adapter's largest storage buffer (${limit} bytes)`,
    );
  });

  it("refuses the texture variant when its textures exceed the adapter limit", async () => {
    const device = await gpu();
    const limit = device.limits.maxTextureDimension2D;
    // One image row wider than the largest texture: only the buffer variants can run it.
    const g = conv2dGeometry("test", [1, 1, 1, limit + 1], [1, 1, 1, 1], {});
    expect(chooseConv2dVariant(device, g)).toBe("gpu-tiled");
    const x = Tensor.empty(device, [1, 1, 1, limit + 1]);
    const w = await upload([2], [1, 1, 1, 1]);
    expect(() => conv2d(x, w, null, { variant: "cpu-texture" })).toThrow(
      `conv2d: variant cpu-texture needs textures larger than this adapter's ${limit} limit`,
    );
    x.release();
  });
});
