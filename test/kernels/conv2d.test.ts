/**
 * Conv2d (ops/conv2d/): every variant's forward and the gradients of x, w and the bias against the
 * float64 reference over awkward geometries (check-op.ts tables), the reference against finite
 * differences, bad input with its exact message, the variant choice on its own, and the WGSL that
 * `cxr kernels dump conv2d` prints being the WGSL that runs.
 */
import {
  backward,
  CONV2D_VARIANTS,
  type Conv2dVariant,
  chooseConv2dVariant,
  conv2d,
  conv2dBackwardBias,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dCost,
  conv2dGeometry,
  conv2dReference,
  type Gpu,
  noGrad,
  type Shape,
  sizeOf,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { CONV2D_KERNELS } from "../../packages/kernels/src/ops/conv2d/index.ts";
import { type Conv2dParams, conv2dOpReference } from "../../packages/kernels/src/ops/conv2d/reference.ts";
import { matmulCanUseSubgroups } from "../../packages/kernels/src/ops/matmul/cpu-subgroup.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { gpu, randomValues, type Tolerance, upload } from "./helpers.ts";

/** A table row; the inputs are [x, w] or [x, w, bias [O]]. */
function row(
  reason: string,
  params: Conv2dParams,
  extra: Partial<OpCase<Conv2dParams>> = {},
): OpCase<Conv2dParams> {
  const inputs = params.bias ? [params.x, params.w, [params.w[0]]] : [params.x, params.w];
  return { reason, params, inputs, ...extra };
}

/** Awkward shapes for every variant: size 1, odd sizes, non-multiples of the 8x8 and 64x64 blocks. */
const cases: OpCase<Conv2dParams>[] = [
  row("3x3 pad 1, odd sizes", { x: [2, 5, 7, 9], w: [6, 5, 3, 3], options: { padding: 1 }, bias: true }),
  row("stride 2 on odd sizes", { x: [1, 3, 9, 8], w: [10, 3, 3, 3], options: { stride: 2, padding: 1 } }),
  row("groups 2 and dilation 2", {
    x: [2, 6, 8, 7],
    w: [4, 3, 3, 3],
    options: { groups: 2, dilation: 2, padding: 2 },
    bias: true,
  }),
  row("depthwise (groups = channels)", {
    x: [1, 4, 6, 5],
    w: [8, 1, 3, 3],
    options: { groups: 4, padding: 1 },
  }),
  row("1x1 (plain GEMM over channels)", { x: [2, 13, 5, 6], w: [9, 13, 1, 1], options: {}, bias: true }),
  row("1x1 stride 2 (not the fast path)", { x: [1, 6, 7, 5], w: [5, 6, 1, 1], options: { stride: 2 } }),
  row("7x7 stride 2 pad 3 (DenseNet stem)", {
    x: [1, 3, 23, 21],
    w: [9, 3, 7, 7],
    options: { stride: 2, padding: 3 },
  }),
  row("size 1 everywhere", { x: [1, 1, 1, 1], w: [1, 1, 1, 1], options: {}, bias: true }),
  row("one-row image, 3x3 pad 1", { x: [1, 2, 1, 5], w: [3, 2, 3, 3], options: { padding: 1 } }),
  row("per-axis stride, padding and dilation, 2x3 kernel", {
    x: [2, 3, 6, 7],
    w: [4, 3, 2, 3],
    options: { stride: [2, 1], padding: [0, 2], dilation: [1, 2] },
    bias: true,
  }),
  row("stride 3 on a 1x2 image (stride phases with no pixels)", {
    x: [2, 3, 1, 2],
    w: [2, 3, 1, 1],
    options: { stride: 3 },
    bias: true,
  }),
  row("kernel as large as the input", { x: [1, 2, 5, 5], w: [3, 2, 5, 5], options: {} }),
  row("stride larger than the kernel", {
    x: [1, 3, 10, 11],
    w: [4, 3, 2, 2],
    options: { stride: 3, padding: 1 },
  }),
  // cpu-subgroup's weight gradient: 18 output channels per group (one full 16-channel block and a
  // partial one), 27 column quads (an odd count: the last lane's second column is past the end).
  row("groups 2 with 18 outputs and 9 inputs per group (partial blocks)", {
    x: [2, 18, 7, 6],
    w: [36, 9, 3, 3],
    options: { groups: 2, padding: 1 },
    bias: true,
  }),
  row("larger: 32 -> 24 channels at 16x16", {
    x: [2, 32, 16, 16],
    w: [24, 32, 3, 3],
    options: { padding: 1 },
    bias: true,
  }),
  // N*OH*OW = 8192 pixels: the weight gradient is split into chunks on every variant.
  row("the benchmark's image size: 8 -> 16 channels at 64x64, weight gradient in chunks", {
    x: [2, 8, 64, 64],
    w: [16, 8, 3, 3],
    options: { padding: 1 },
  }),
  row(
    "small 3x3 pad 1, for finite differences",
    { x: [1, 2, 4, 3], w: [3, 2, 3, 3], options: { padding: 1 }, bias: true },
    {
      finiteDifferences: true,
    },
  ),
  row(
    "small stride 2, dilation 2, groups 2, for finite differences",
    { x: [2, 4, 5, 5], w: [2, 2, 2, 2], options: { stride: 2, dilation: 2, groups: 2 }, bias: true },
    { finiteDifferences: true },
  ),
];

/**
 * f32 sums of `terms` unit-scale products: partial sums grow like sqrt(terms) and each add rounds at
 * that scale, so a sequential (naive) sum drifts like eps * terms; blocked and split sums do better.
 */
function sumTolerance(terms: number): Tolerance {
  return { atol: 1.2e-7 * terms + 1e-6, rtol: 1e-5 };
}

const geometryOf = ({ x, w, options }: Conv2dParams) => conv2dGeometry("test", x, w, options);

const badInputs: BadInputCase[] = [];
/** A bad-input row whose call gets zero tensors of these shapes (released afterwards). */
function bad(
  reason: string,
  shapes: Shape[],
  call: (tensors: Tensor[], device: Gpu) => unknown,
  throws: string | RegExp,
) {
  badInputs.push({
    reason,
    run: (device) => {
      const tensors = shapes.map((shape) => Tensor.zeros(device, shape));
      try {
        return call(tensors, device);
      } finally {
        for (const tensor of tensors) tensor.release();
      }
    },
    throws,
  });
}
bad(
  "input channels that do not match the weight",
  [
    [2, 4, 5, 5],
    [6, 3, 3, 3],
  ],
  ([x, w]) => conv2d(x, w),
  "conv2d: input has 4 channels but the weight expects 3 x 1 groups (x: [2, 4, 5, 5], w: [6, 3, 3, 3])",
);
bad(
  "input channels that do not match weight x groups",
  [
    [2, 4, 5, 5],
    [6, 2, 3, 3],
  ],
  ([x, w]) => conv2d(x, w, null, { groups: 4 }),
  "conv2d: input has 4 channels but the weight expects 2 x 4 groups (x: [2, 4, 5, 5], w: [6, 2, 3, 3])",
);
bad(
  "output channels not divisible by the groups",
  [
    [2, 4, 5, 5],
    [5, 1, 3, 3],
  ],
  ([x, w]) => conv2d(x, w, null, { groups: 4 }),
  "conv2d: 5 output channels are not divisible by 4 groups (x: [2, 4, 5, 5], w: [5, 1, 3, 3])",
);
bad(
  "a kernel larger than the padded input",
  [
    [2, 4, 5, 5],
    [6, 4, 7, 7],
  ],
  ([x, w]) => conv2d(x, w),
  "conv2d: kernel 7x7 is larger than the padded input (output -1x-1) (x: [2, 4, 5, 5], w: [6, 4, 7, 7])",
);
bad(
  "a bias of the wrong shape",
  [[2, 4, 5, 5], [6, 4, 3, 3], [3]],
  ([x, w, bias]) => conv2d(x, w, bias),
  "conv2d: bias must be [6] (x: [2, 4, 5, 5], w: [6, 4, 3, 3], bias: [3])",
);
bad(
  "stride 0",
  [
    [2, 4, 5, 5],
    [6, 4, 3, 3],
  ],
  ([x, w]) => conv2d(x, w, null, { stride: 0 }),
  "conv2d: stride must be an integer >= 1 or a pair of them, got 0",
);
bad(
  "negative padding",
  [
    [2, 4, 5, 5],
    [6, 4, 3, 3],
  ],
  ([x, w]) => conv2d(x, w, null, { padding: [1, -1] }),
  "conv2d: padding must be an integer >= 0 or a pair of them, got 1,-1",
);
bad(
  "an unknown variant",
  [
    [2, 4, 5, 5],
    [6, 4, 3, 3],
  ],
  ([x, w]) => conv2d(x, w, null, { variant: "fast" as Conv2dVariant }),
  'conv2d: unknown variant "fast" (expected cpu-subgroup, cpu-texture, gpu-tiled, naive) (x: [2, 4, 5, 5], w: [6, 4, 3, 3])',
);
bad(
  "an input that is not [N, C, H, W]",
  [
    [2, 2],
    [6, 4, 3, 3],
  ],
  ([x, w]) => conv2d(x, w),
  "conv2d: input must be [N, C, H, W] (x: [2, 2], w: [6, 4, 3, 3])",
);
bad(
  "a u32 input",
  [[6, 4, 3, 3]],
  ([w], device) => conv2d(Tensor.upload(device, [1, 2, 3, 4], [1, 1, 2, 2], "u32"), w),
  "conv2d: needs f32 x, got u32 (x: [1, 1, 2, 2], w: [6, 4, 3, 3])",
);
bad(
  "an input gradient whose gradOutput has the wrong shape",
  [
    [1, 3, 5, 5],
    [3, 2, 3, 3],
  ],
  ([wrong, w]) => conv2dBackwardInput(wrong, w, [1, 2, 5, 5]),
  "conv2dBackwardInput: gradOutput must be [1, 3, 3, 3] (gradOutput: [1, 3, 5, 5], w: [3, 2, 3, 3])",
);
bad(
  "a weight gradient whose gradOutput has the wrong shape",
  [
    [1, 3, 5, 5],
    [1, 2, 5, 5],
  ],
  ([wrong, x]) => conv2dBackwardWeight(wrong, x, [3, 2, 3, 3]),
  "conv2dBackwardWeight: gradOutput must be [1, 3, 3, 3] (gradOutput: [1, 3, 5, 5], x: [1, 2, 5, 5])",
);
bad(
  "a bias gradient of a gradOutput that is not [N, O, OH, OW]",
  [[2]],
  ([flat]) => conv2dBackwardBias(flat),
  "conv2dBackwardBias: gradOutput must be [N, O, OH, OW] (gradOutput: [2])",
);
badInputs.push({
  reason: "an output larger than the adapter's largest storage buffer",
  run: (device) => {
    const limit = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    // Padding p makes a (1 + 2p)^2 output; pick p so it needs more bytes than one buffer holds.
    const padding = Math.ceil(Math.sqrt(limit / 4) / 2) + 1;
    const x = Tensor.zeros(device, [1, 1, 1, 1]);
    const w = Tensor.zeros(device, [1, 1, 1, 1]);
    try {
      return conv2d(x, w, null, { padding });
    } finally {
      x.release();
      w.release();
    }
  },
  throws:
    /^conv2d: output \[1, 1, (\d+), \1\] needs \d+ bytes, more than this adapter's largest storage buffer \(\d+ bytes\) \(x: \[1, 1, 1, 1\], w: \[1, 1, 1, 1\]\)$/,
});
badInputs.push({
  reason: "the texture variant forced where its textures exceed the adapter limit",
  run: (device) => {
    // One image row wider than the largest texture: only the buffer variants can run it.
    const x = Tensor.empty(device, [1, 1, 1, device.limits.maxTextureDimension2D + 1]);
    const w = Tensor.zeros(device, [1, 1, 1, 1]);
    try {
      return conv2d(x, w, null, { variant: "cpu-texture" });
    } finally {
      x.release();
      w.release();
    }
  },
  throws: /^conv2d: variant cpu-texture needs textures larger than this adapter's \d+ limit/,
});
badInputs.push({
  reason: "the subgroup variant forced where its textures exceed the adapter limit",
  run: (device) => {
    const x = Tensor.empty(device, [1, 1, 1, device.limits.maxTextureDimension2D + 1]);
    const w = Tensor.zeros(device, [1, 1, 1, 1]);
    try {
      return conv2d(x, w, null, { variant: "cpu-subgroup" });
    } finally {
      x.release();
      w.release();
    }
  },
  throws: /^conv2d: variant cpu-subgroup needs textures larger than this adapter's \d+ limit/,
});

checkOp(
  {
    name: "conv2d",
    variants: CONV2D_VARIANTS,
    reference: conv2dOpReference,
    run: ([x, w, bias], params, variant) => conv2d(x, w, bias ?? null, { ...params.options, variant }),
    tolerance: ({ params }) => {
      const g = geometryOf(params);
      return {
        forward: sumTolerance(g.inPerGroup * g.kernelHeight * g.kernelWidth),
        backward: sumTolerance(g.batch * g.outHeight * g.outWidth),
      };
    },
    // x's gradient sums over output channels and taps; w's and the bias's over batch and pixels.
    gradientTolerance: ({ params }, input) => {
      const g = geometryOf(params);
      return input === 0
        ? sumTolerance(g.outPerGroup * g.kernelHeight * g.kernelWidth)
        : sumTolerance(g.batch * g.outHeight * g.outWidth);
    },
  },
  cases,
  badInputs,
);

describe("conv2d: the rest", () => {
  it("the reference matches a hand-computed 2x2 example", () => {
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

  it("chooses by adapter kind and texture limit (no GPU needed)", () => {
    const limits = { maxTextureDimension2D: 16384 };
    const g = conv2dGeometry("test", [8, 128, 64, 64], [128, 128, 3, 3], { padding: 1 });
    expect(chooseConv2dVariant({ kind: "cpu", limits }, g)).toBe("cpu-texture");
    expect(chooseConv2dVariant({ kind: "discrete", limits }, g)).toBe("gpu-tiled");
    expect(chooseConv2dVariant({ kind: "integrated", limits }, g)).toBe("gpu-tiled");
    // One image row wider than the largest texture: only the buffer variants can run it.
    const wide = conv2dGeometry("test", [1, 1, 1, 16385], [1, 1, 1, 1], {});
    expect(chooseConv2dVariant({ kind: "cpu", limits }, wide)).toBe("gpu-tiled");
    // 8 x 128 channels of 66x66 padded planes need more texture rows than a 1024 limit allows.
    expect(chooseConv2dVariant({ kind: "cpu", limits: { maxTextureDimension2D: 1024 } }, g)).toBe(
      "gpu-tiled",
    );
    // Subgroups of >= 8 lanes (llvmpipe's): the subgroup forward; narrower ones do not count.
    const subgroups = (subgroupMinSize: number) => ({
      features: new Set(["subgroups"]),
      device: { adapterInfo: { subgroupMinSize } },
    });
    expect(chooseConv2dVariant({ kind: "cpu", limits, ...subgroups(8) }, g)).toBe("cpu-subgroup");
    expect(chooseConv2dVariant({ kind: "cpu", limits, ...subgroups(4) }, g)).toBe("cpu-texture");
    expect(chooseConv2dVariant({ kind: "cpu", limits, ...subgroups(8) }, wide)).toBe("gpu-tiled");
    expect(chooseConv2dVariant({ kind: "discrete", limits, ...subgroups(32) }, g)).toBe("gpu-tiled");
  });

  it("the chooser agrees on this machine's adapter", async () => {
    const device = await gpu();
    const g = conv2dGeometry("test", [8, 128, 64, 64], [128, 128, 3, 3], { padding: 1 });
    const cpuChoice = matmulCanUseSubgroups(device) ? "cpu-subgroup" : "cpu-texture";
    expect(chooseConv2dVariant(device, g)).toBe(device.kind === "cpu" ? cpuChoice : "gpu-tiled");
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

  it("refuses f16 input with an f32 weight (f16 runs all-f16 only: half.test.ts)", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return; // f16 tensors cannot even be made here
    const half = Tensor.upload(device, new Float32Array(50), [1, 2, 5, 5], "f16");
    const w = await upload(randomValues(3 * 2 * 3 * 3, 2), [3, 2, 3, 3]);
    expect(() => conv2d(half, w)).toThrow(
      "conv2d: f16 x needs f16 w, got f32 (cast it first) (x: [1, 2, 5, 5], w: [3, 2, 3, 3])",
    );
  });

  /** Compiles every pipeline through a spy; returns the sources compiled during `body`. */
  async function compiledDuring(body: () => Promise<void>): Promise<string[]> {
    const device = await gpu();
    const compiled: string[] = [];
    const pipeline = device.pipeline.bind(device);
    const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
      compiled.push(code);
      return pipeline(code, label, entryPoint);
    };
    device.pipeline = spy;
    try {
      await body();
    } finally {
      delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
    }
    return compiled;
  }

  it.each(CONV2D_VARIANTS)("%s: the WGSL that `cxr kernels dump` prints is what runs", async (variant) => {
    const compiled = await compiledDuring(async () => {
      // A 3x3 and a 1x1 convolution, each with every gradient; 2x8x64x64 splits the weight gradient.
      for (const [xShape, wShape, padding] of [
        [[2, 8, 64, 64], [4, 8, 3, 3], 1],
        [[1, 8, 5, 5], [4, 8, 1, 1], 0],
      ] as const) {
        const x = await upload(randomValues(sizeOf(xShape), 1), [...xShape], true);
        const w = await upload(randomValues(sizeOf(wShape), 2), [...wShape], true);
        const bias = await upload(randomValues(4, 3), [4], true);
        const y = conv2d(x, w, bias, { padding, variant });
        backward(y, await upload(randomValues(y.size, 4), y.shape));
        await x.grad!.download();
        for (const tensor of [x, w, bias, y]) tensor.release();
      }
    });
    const kernels = CONV2D_KERNELS[variant];
    for (const code of compiled) expect(Object.values(kernels)).toContain(code);
    for (const pass of Object.keys(kernels)) expect(compiled, pass).toContain(kernels[pass]);
  });
});
