/**
 * Matmul (ops/matmul/): every variant's forward and the gradients of a, b and the bias against the
 * float64 reference over awkward shapes (check-op.ts tables), the reference against finite
 * differences, bad input with its exact message, the variant choice on its own, and the WGSL that
 * `cxr kernels dump matmul` prints being the WGSL that runs.
 */
import {
  backward,
  type Gpu,
  MATMUL_VARIANTS,
  type MatmulActivation,
  type MatmulVariant,
  matmul,
  matmulCost,
  matmulReference,
  noGrad,
  releaseMatmulScratch,
  resolveMatmulShapes,
  type Shape,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { chooseMatmulVariant } from "../../packages/kernels/src/ops/matmul/choose.ts";
import { matmulCanUseSubgroups } from "../../packages/kernels/src/ops/matmul/cpu-subgroup.ts";
import { MATMUL_KERNELS } from "../../packages/kernels/src/ops/matmul/index.ts";
import { type MatmulParams, matmulOpReference } from "../../packages/kernels/src/ops/matmul/reference.ts";
import { type BadInputCase, checkOp, type OpCase, type OpUnderTest } from "./check-op.ts";
import { gpu, randomValues, type Tolerance, upload } from "./helpers.ts";

/** A table row: operand shapes and options; the inputs are [a, b] or [a, b, bias [N]]. */
function row(
  reason: string,
  params: MatmulParams,
  extra: Partial<OpCase<MatmulParams>> = {},
): OpCase<MatmulParams> {
  const { N } = resolveMatmulShapes(params.a, params.b, params);
  return { reason, params, inputs: params.bias ? [params.a, params.b, [N]] : [params.a, params.b], ...extra };
}

/** Awkward shapes: size 1, odd sizes, non-multiples of every tile, each batch-broadcast path. */
const cases: OpCase<MatmulParams>[] = [
  row("size 1", { a: [1, 1], b: [1, 1], bias: true }),
  row("odd sizes", { a: [7, 5], b: [5, 3], bias: true, activation: "relu" }),
  row("both transposed", { a: [5, 7], b: [3, 5], transposeA: true, transposeB: true, activation: "gelu" }),
  row("not a multiple of any tile", { a: [33, 70], b: [70, 17], bias: true, activation: "silu" }),
  row("batched a, 2-D b (batch folds into rows)", { a: [2, 3, 9, 13], b: [13, 6], bias: true }),
  row("batched transposed a, 2-D b", { a: [4, 13, 9], b: [13, 6], transposeA: true, activation: "gelu" }),
  row("2-D a, batched b (gradient of a summed over batches)", {
    a: [9, 13],
    b: [3, 6, 13],
    transposeB: true,
    bias: true,
    activation: "relu",
  }),
  row("both batched", { a: [3, 9, 13], b: [3, 13, 6], activation: "silu" }),
  row("batch dims [1, 5] against [5]", { a: [1, 5, 9, 13], b: [5, 6, 13], transposeB: true }),
  row("Linear layout, K a multiple of 64 (copied, not packed)", {
    a: [2, 70, 64],
    b: [40, 64],
    transposeB: true,
    bias: true,
  }),
  row("batched, transposed a, K = 64", { a: [3, 64, 20], b: [3, 64, 50], transposeA: true }),
  row("both batched, K = 128 (copied batch by batch)", {
    a: [3, 20, 128],
    b: [3, 50, 128],
    transposeB: true,
  }),
  row("few rows, many columns (roles swapped)", { a: [6, 3], b: [3, 300], bias: true, activation: "gelu" }),
  row("large", { a: [130, 520], b: [270, 520], transposeB: true, bias: true, activation: "silu" }),
  // Small cases whose reference gradients are also checked by finite differences.
  row(
    "small, relu, for finite differences",
    { a: [3, 4], b: [4, 5], bias: true, activation: "relu" },
    { finiteDifferences: true },
  ),
  row(
    "small, transposed a, silu, for finite differences",
    { a: [2, 4, 3], b: [4, 5], transposeA: true, bias: true, activation: "silu" },
    { finiteDifferences: true },
  ),
  row(
    "small, transposed b, gelu, batched b, for finite differences",
    { a: [3, 4], b: [2, 5, 4], transposeB: true, bias: true, activation: "gelu" },
    { finiteDifferences: true },
  ),
  row(
    "small, both transposed and batched, for finite differences",
    { a: [2, 4, 3], b: [2, 5, 4], transposeA: true, transposeB: true },
    { finiteDifferences: true },
  ),
];

/** f32 sums of `length` products of N(0,1) values: error grows like sqrt(length). */
function sumTolerance(length: number): Tolerance {
  return { atol: 3e-6 * Math.sqrt(length), rtol: 2e-5 };
}

/**
 * Gradients sum `length` terms, each carrying the activation derivative at a pre-activation that is
 * itself an f32 sum over K: both errors add up.
 */
function gradientTolerance(length: number, K: number): Tolerance {
  return { atol: 6e-6 * Math.sqrt(length + K), rtol: 5e-5 };
}

/** The op under test; `chosen` runs without a forced variant, `prepare` runs before each call. */
function matmulUnderTest<V extends string>(
  name: string,
  variants: readonly V[],
  variantOf: (variant: V) => MatmulVariant | undefined,
  prepare: (device: Gpu) => void = () => {},
): OpUnderTest<MatmulParams, V> {
  return {
    name,
    variants,
    reference: matmulOpReference,
    run: ([a, b, bias], params, variant, device) => {
      prepare(device);
      return matmul(a, b, { ...params, bias: bias ?? null, variant: variantOf(variant) });
    },
    tolerance: ({ params }) => {
      const { K, M, N, batch } = resolveMatmulShapes(params.a, params.b, params);
      return { forward: sumTolerance(K), backward: gradientTolerance(Math.max(M, N) * batch, K) };
    },
    // a's gradient sums over the output columns, b's and the bias's over the output rows.
    gradientTolerance: ({ params }, input) => {
      const { K, M, N, batch } = resolveMatmulShapes(params.a, params.b, params);
      if (input === 0) return gradientTolerance(N * batch, K);
      if (input === 1) return gradientTolerance(M * batch, K);
      return sumTolerance(M * batch);
    },
  };
}

/** Runs `call` with zero operands of these shapes, releasing them afterwards. */
function withOperands(device: Gpu, aShape: Shape, bShape: Shape, call: (a: Tensor, b: Tensor) => unknown) {
  const a = Tensor.zeros(device, aShape);
  const b = Tensor.zeros(device, bShape);
  try {
    return call(a, b);
  } finally {
    a.release();
    b.release();
  }
}

const badInputs: BadInputCase[] = [
  {
    reason: "inner dimensions differ",
    run: (device) => withOperands(device, [2, 3], [4, 5], (a, b) => matmul(a, b)),
    throws: "matmul: inner dimensions differ: a gives K=3, b gives K=4 (a: [2, 3], b: [4, 5])",
  },
  {
    reason: "inner dimensions differ with b transposed",
    run: (device) => withOperands(device, [2, 3], [5, 4], (a, b) => matmul(a, b, { transposeB: true })),
    throws: "matmul: inner dimensions differ: a gives K=3, b gives K=4 (transposed) (a: [2, 3], b: [5, 4])",
  },
  {
    reason: "batch dimensions that neither match nor broadcast",
    run: (device) => withOperands(device, [2, 3, 4], [3, 4, 5], (a, b) => matmul(a, b)),
    throws:
      "matmul: batch dimensions differ; they broadcast only when one operand's batch is 1 or absent (a: [2, 3, 4], b: [3, 4, 5])",
  },
  {
    reason: "an operand of rank below 2",
    run: (device) => withOperands(device, [3], [3, 4], (a, b) => matmul(a, b)),
    throws: "matmul: operands need at least 2 dimensions (a: [3], b: [3, 4])",
  },
  {
    reason: "a bias of the wrong shape",
    run: (device) =>
      withOperands(device, [2, 3], [3, 4], (a, b) =>
        withOperands(device, [5], [1, 1], (bias) => matmul(a, b, { bias })),
      ),
    throws: "matmul: bias must have shape [4] (N), got [5] (a: [2, 3], b: [3, 4], bias: [5])",
  },
  {
    reason: "an unknown activation",
    run: (device) =>
      withOperands(device, [2, 3], [3, 4], (a, b) =>
        matmul(a, b, { activation: "tanh" as MatmulActivation }),
      ),
    throws: 'matmul: unknown activation "tanh" (use none, relu, silu, gelu) (a: [2, 3], b: [3, 4])',
  },
  {
    reason: "an unknown variant",
    run: (device) =>
      withOperands(device, [2, 3], [3, 4], (a, b) => matmul(a, b, { variant: "fast" as MatmulVariant })),
    throws:
      'matmul: unknown variant "fast" (use cpu-subgroup, cpu-register-blocked, gpu-tiled, naive) (a: [2, 3], b: [3, 4])',
  },
  {
    reason: "a u32 operand",
    run: (device) => {
      const a = Tensor.upload(device, [1, 2, 3, 4], [2, 2], "u32");
      return withOperands(device, [2, 2], [1, 1], (b) => matmul(a, b));
    },
    throws: "matmul: needs f32 a, got u32 (a: [2, 2], b: [2, 2])",
  },
  {
    reason: "an output larger than the adapter's largest storage buffer",
    run: (device) => {
      const limit = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
      const rows = Math.ceil(limit / 4 / 1024) + 1;
      return withOperands(device, [rows, 1], [1, 1024], (a, b) => matmul(a, b));
    },
    throws:
      /^matmul: output \[\d+, 1024\] needs \d+ bytes, more than this adapter's largest storage buffer \(\d+ bytes\)/,
  },
  {
    reason: "operands the forced CPU variant cannot pack",
    run: (device) => {
      const K = 4 * device.limits.maxTextureDimension2D + 4;
      return withOperands(device, [1, K], [K, 1], (a, b) =>
        matmul(a, b, { variant: "cpu-register-blocked" }),
      );
    },
    throws:
      /^matmul: variant cpu-register-blocked cannot pack these operands: K=\d+ needs \d+ texels per packed row, more than the adapter's \d+/,
  },
  {
    reason: "operands the forced subgroup variant cannot pack",
    run: (device) => {
      const K = 4 * device.limits.maxTextureDimension2D + 4;
      return withOperands(device, [8, K], [K, 8], (a, b) => matmul(a, b, { variant: "cpu-subgroup" }));
    },
    throws:
      /^matmul: variant cpu-subgroup cannot pack these operands: K=\d+ needs \d+ texels per packed row, more than the adapter's \d+/,
  },
];

checkOp(
  matmulUnderTest("matmul", MATMUL_VARIANTS, (variant) => variant),
  cases,
  badInputs,
);

const CPU_ONLY: readonly MatmulVariant[] = ["cpu-subgroup", "cpu-register-blocked"];
const byReason = (start: string) => cases.find((testCase) => testCase.reason.startsWith(start))!;

// The variant the chooser picks, for the shapes where the CPU adapter's choice differs.
checkOp(
  matmulUnderTest("matmul, chosen variant", ["chosen"], () => undefined),
  [byReason("not a multiple"), byReason("few rows"), byReason("Linear layout")],
);

// 16500 rows > 16384 per texture layer on lavapipe: rows spill into a second layer.
checkOp(
  matmulUnderTest("matmul, packed rows across texture layers", CPU_ONLY, (variant) => variant),
  [
    row("two layers, copied by the copy engine", { a: [16500, 64], b: [20, 64], transposeB: true }),
    row("two layers, packed by a shader", { a: [16400, 5], b: [5, 6], bias: true }),
  ],
);

checkOp(
  matmulUnderTest(
    "matmul after its scratch textures are released",
    CPU_ONLY,
    (variant) => variant,
    (device) => releaseMatmulScratch(device),
  ),
  [byReason("Linear layout"), byReason("odd sizes")],
);

describe("matmul: the rest", () => {
  const lavapipeLimits = {
    maxTextureDimension2D: 16384,
    maxTextureArrayLayers: 2048,
    maxComputeWorkgroupsPerDimension: 65535,
  };

  it("chooses by adapter kind, limits and shape (no GPU needed)", () => {
    const cpu = { kind: "cpu" as const, limits: lavapipeLimits };
    const square = { batch: 1, M: 1024, N: 1024, K: 1024 };
    expect(chooseMatmulVariant(cpu, square)).toBe("cpu-register-blocked");
    expect(chooseMatmulVariant(cpu, { batch: 1, M: 1280, N: 4, K: 320 })).toBe("naive");
    // The row count never decides (x W^T: rows are the batch; the variants sum in different orders).
    for (const M of [1, 2, 4, 5, 6, 8, 32])
      expect(chooseMatmulVariant(cpu, { batch: 1, M, N: 1280, K: 320 }), `M ${M}`).toBe(
        "cpu-register-blocked",
      );
    for (const M of [1, 3, 6, 1024])
      expect(chooseMatmulVariant(cpu, { batch: 1, M, N: 3, K: 320 }), `M ${M}, N 3`).toBe("naive");
    // K beyond what one texture row holds: the tiled kernel takes over.
    expect(chooseMatmulVariant(cpu, { batch: 1, M: 64, N: 64, K: 4 * 65536 })).toBe("gpu-tiled");
    // More packed rows than the texture layers hold.
    expect(
      chooseMatmulVariant(
        { kind: "cpu", limits: { ...lavapipeLimits, maxTextureArrayLayers: 1 } },
        {
          batch: 1,
          M: 20000,
          N: 64,
          K: 64,
        },
      ),
    ).toBe("gpu-tiled");
    // With subgroups of >= 8 lanes (llvmpipe's), the subgroup-broadcast core; narrower ones do not count.
    const subgroups = (subgroupMinSize: number) => ({
      ...cpu,
      features: new Set(["subgroups"]),
      device: { adapterInfo: { subgroupMinSize } },
    });
    expect(chooseMatmulVariant(subgroups(8), square)).toBe("cpu-subgroup");
    expect(chooseMatmulVariant(subgroups(8), { batch: 1, M: 5, N: 1280, K: 320 })).toBe("cpu-subgroup");
    // Few rows take the packed core too (the choice never depends on M: batch invariance); few columns stay naive.
    expect(chooseMatmulVariant(subgroups(8), { batch: 1, M: 1, N: 1280, K: 320 })).toBe("cpu-subgroup");
    expect(chooseMatmulVariant(subgroups(8), { batch: 1, M: 1280, N: 4, K: 320 })).toBe("naive");
    expect(chooseMatmulVariant(subgroups(4), square)).toBe("cpu-register-blocked");
    expect(
      chooseMatmulVariant({ ...cpu, features: new Set<string>(), device: subgroups(8).device }, square),
    ).toBe("cpu-register-blocked");
    expect(chooseMatmulVariant({ ...subgroups(8), kind: "discrete" }, square)).toBe("gpu-tiled");
    expect(chooseMatmulVariant({ kind: "discrete", limits: lavapipeLimits }, square)).toBe("gpu-tiled");
    expect(chooseMatmulVariant({ kind: "integrated", limits: lavapipeLimits }, square)).toBe("gpu-tiled");
  });

  it("the chooser agrees on this machine's adapter", async () => {
    const device = await gpu();
    const cpuChoice = matmulCanUseSubgroups(device) ? "cpu-subgroup" : "cpu-register-blocked";
    expect(chooseMatmulVariant(device, { batch: 1, M: 1024, N: 1024, K: 1024 })).toBe(
      device.kind === "cpu" ? cpuChoice : "gpu-tiled",
    );
  });

  it("records nothing under noGrad", async () => {
    const a = await upload([1, 2, 3, 4], [2, 2], true);
    const y = noGrad(() => matmul(a, a));
    expect(y.requiresGrad).toBe(false);
    expect(y.node).toBeNull();
  });

  it("counts a multiply-add as 2 FLOPs plus the epilogue, and each operand's bytes once", () => {
    expect(matmulCost({ batch: 2, M: 3, N: 4, K: 5 })).toEqual({
      flops: 2 * 2 * 3 * 4 * 5,
      bytes: 4 * (2 * 3 * 5 + 2 * 5 * 4 + 2 * 3 * 4),
    });
    expect(matmulCost({ batch: 1, M: 3, N: 4, K: 5 }, { bias: true, activation: "relu" }).flops).toBe(
      2 * 60 + 2 * 12,
    );
  });

  it("the reference computes a small product by hand", () => {
    // [[1, 2], [3, 4]] x [[5, 6], [7, 8]] + [1, -100], ReLU.
    const y = matmulReference.forward(
      Float64Array.from([1, 2, 3, 4]),
      [2, 2],
      Float64Array.from([5, 6, 7, 8]),
      [2, 2],
      { bias: Float64Array.from([1, -100]), activation: "relu" },
    );
    expect([...y]).toEqual([20, 0, 44, 0]);
  });

  it("refuses an f16 a with an f32 b (f16 runs all-f16 only: half.test.ts)", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return; // f16 tensors cannot even be made here
    const a = Tensor.zeros(device, [2, 3], "f16");
    const b = Tensor.zeros(device, [3, 4]);
    expect(() => matmul(a, b)).toThrow(
      "matmul: f16 a needs f16 b, got f32 (cast it first) (a: [2, 3], b: [3, 4])",
    );
  });

  /** Compiles every pipeline through a spy; returns the sources compiled during `body`. */
  async function compiledDuring(body: (device: Gpu) => Promise<void>): Promise<string[]> {
    const device = await gpu();
    const compiled: string[] = [];
    const pipeline = device.pipeline.bind(device);
    const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
      compiled.push(code);
      return pipeline(code, label, entryPoint);
    };
    device.pipeline = spy;
    try {
      await body(device);
    } finally {
      delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
    }
    return compiled;
  }

  it.each(MATMUL_VARIANTS)("%s: the WGSL that `cxr kernels dump` prints is what runs", async (variant) => {
    const compiled = await compiledDuring(async () => {
      // K = 13 is not a multiple of 64, so the CPU variant packs with its shader (not the copy engine).
      const a = await upload(randomValues(9 * 13, 1), [9, 13], true);
      const b = await upload(randomValues(13 * 2, 2), [13, 2], true);
      const bias = await upload(randomValues(2, 3), [2], true);
      const y = matmul(a, b, { bias, activation: "gelu", variant });
      backward(y, await upload(randomValues(18, 4), [9, 2]));
      await a.grad!.download();
      for (const tensor of [a, b, bias, y]) tensor.release();
    });
    const kernels = MATMUL_KERNELS[variant];
    for (const code of compiled) expect(Object.values(kernels)).toContain(code);
    for (const pass of Object.keys(kernels)) expect(compiled, pass).toContain(kernels[pass]);
  });
});
