import {
  backward,
  chooseMatmulVariant,
  MATMUL_VARIANTS,
  type MatmulActivation,
  type MatmulVariant,
  matmul,
  matmulCost,
  matmulReference,
  noGrad,
  releaseMatmulScratch,
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

interface MatmulCase {
  why: string;
  a: Shape;
  b: Shape;
  transposeA?: boolean;
  transposeB?: boolean;
  bias?: boolean;
  activation?: MatmulActivation;
}

/** Awkward shapes: size 1, odd sizes, non-multiples of every tile, each batch-broadcast path. */
const CASES: MatmulCase[] = [
  { why: "size 1", a: [1, 1], b: [1, 1], bias: true },
  { why: "odd sizes", a: [7, 5], b: [5, 3], bias: true, activation: "relu" },
  { why: "both transposed", a: [5, 7], b: [3, 5], transposeA: true, transposeB: true, activation: "gelu" },
  { why: "not a multiple of any tile", a: [33, 70], b: [70, 17], bias: true, activation: "silu" },
  { why: "batched a, 2-D b (batch folds into rows)", a: [2, 3, 9, 13], b: [13, 6], bias: true },
  { why: "batched transposed a, 2-D b", a: [4, 13, 9], b: [13, 6], transposeA: true, activation: "gelu" },
  {
    why: "2-D a, batched b (gradient of a summed over batches)",
    a: [9, 13],
    b: [3, 6, 13],
    transposeB: true,
    bias: true,
    activation: "relu",
  },
  { why: "both batched", a: [3, 9, 13], b: [3, 13, 6], activation: "silu" },
  { why: "batch dims [1, 5] against [5]", a: [1, 5, 9, 13], b: [5, 6, 13], transposeB: true },
  {
    why: "Linear layout, K a multiple of 64 (copied, not packed)",
    a: [2, 70, 64],
    b: [40, 64],
    transposeB: true,
    bias: true,
  },
  { why: "batched, transposed a, K = 64", a: [3, 64, 20], b: [3, 64, 50], transposeA: true },
  {
    why: "both batched, K = 128 (copied batch by batch)",
    a: [3, 20, 128],
    b: [3, 50, 128],
    transposeB: true,
  },
  { why: "few rows, many columns (roles swapped)", a: [6, 3], b: [3, 300], bias: true, activation: "gelu" },
  { why: "large", a: [130, 520], b: [270, 520], transposeB: true, bias: true, activation: "silu" },
];

/** f32 sums of `length` products of N(0,1) values: error grows like sqrt(length). */
function tolerance(length: number): Tolerance {
  return { atol: 3e-6 * Math.sqrt(length), rtol: 2e-5 };
}

/**
 * Gradients sum `length` terms, each carrying the activation derivative at a pre-activation that is
 * itself an f32 sum over K: both errors add up.
 */
function gradientTolerance(length: number, K: number): Tolerance {
  return { atol: 6e-6 * Math.sqrt(length + K), rtol: 5e-5 };
}

function caseNamed(why: string): MatmulCase {
  const found = CASES.find((testCase) => testCase.why.startsWith(why));
  if (!found) throw new Error(`no matmul test case "${why}"`);
  return found;
}

function seeded(shape: Shape, seed: number): Float64Array {
  return asFloat32(randomValues(sizeOf(shape), seed));
}

async function checkAgainstReference(testCase: MatmulCase, variant: MatmulVariant | undefined, seed: number) {
  const options = {
    transposeA: testCase.transposeA,
    transposeB: testCase.transposeB,
    activation: testCase.activation,
  };
  const outputShape = matmulReference.outputShape(testCase.a, testCase.b, options);
  const [M, N] = outputShape.slice(-2);
  const K = testCase.transposeA ? testCase.a.at(-2)! : testCase.a.at(-1)!;
  const batch = sizeOf(outputShape) / (M * N);
  const a = seeded(testCase.a, seed);
  const b = seeded(testCase.b, seed + 1);
  const bias = testCase.bias ? seeded([N], seed + 2) : null;
  const gradOutput = seeded(outputShape, seed + 3);
  const aTensor = await upload(a, testCase.a, true);
  const bTensor = await upload(b, testCase.b, true);
  const biasTensor = bias ? await upload(bias, [N], true) : null;
  const y = matmul(aTensor, bTensor, { ...options, bias: biasTensor, variant });
  expect(y.shape).toEqual(outputShape);
  const label = `${testCase.why} (${variant ?? "chosen"})`;
  expectClose(
    await y.download(),
    matmulReference.forward(a, testCase.a, b, testCase.b, { ...options, bias }),
    tolerance(K),
    `${label} forward`,
  );
  backward(y, await upload(gradOutput, outputShape));
  const expected = matmulReference.backward(a, testCase.a, b, testCase.b, gradOutput, { ...options, bias });
  expectClose(await aTensor.grad!.download(), expected.a, gradientTolerance(N * batch, K), `${label} grad a`);
  expectClose(await bTensor.grad!.download(), expected.b, gradientTolerance(M * batch, K), `${label} grad b`);
  if (biasTensor) {
    expectClose(
      await biasTensor.grad!.download(),
      expected.bias!,
      tolerance(M * batch),
      `${label} grad bias`,
    );
  }
  for (const tensor of [aTensor, bTensor, biasTensor, y]) tensor?.release();
}

describe.each(MATMUL_VARIANTS)("matmul variant %s", (variant) => {
  it.each(CASES.map((testCase, index) => [testCase.why, testCase, index] as const))(
    "forward and backward match the float64 reference: %s",
    async (_why, testCase, index) => {
      await checkAgainstReference(testCase, variant, 100 + 10 * index);
    },
  );
});

describe("matmul with the chosen variant", () => {
  it("matches the reference without a forced variant", async () => {
    await checkAgainstReference(caseNamed("not a multiple"), undefined, 7);
    await checkAgainstReference(caseNamed("few rows"), undefined, 8);
    await checkAgainstReference(caseNamed("Linear layout"), undefined, 9);
  });

  it("packs more rows than one texture layer holds (cpu-register-blocked)", async () => {
    // 16500 rows > 16384 per layer on lavapipe: rows spill into a second layer, by copy and by shader.
    await checkAgainstReference(
      { why: "two layers, copied", a: [16500, 64], b: [20, 64], transposeB: true },
      "cpu-register-blocked",
      21,
    );
    await checkAgainstReference(
      { why: "two layers, packed", a: [16400, 5], b: [5, 6], bias: true },
      "cpu-register-blocked",
      22,
    );
  });

  it("picks the variant by adapter kind and shape", async () => {
    const device = await gpu();
    const square = { batch: 1, M: 1024, N: 1024, K: 1024 };
    const vector = { batch: 1, M: 1, N: 1280, K: 320 };
    if (device.kind === "cpu") {
      expect(chooseMatmulVariant(device, square)).toBe("cpu-register-blocked");
      expect(chooseMatmulVariant(device, vector)).toBe("naive");
      // K beyond what one texture row holds (16384 texels on lavapipe): the tiled kernel takes over.
      expect(chooseMatmulVariant(device, { batch: 1, M: 64, N: 64, K: 4 * 65536 })).toBe("gpu-tiled");
    } else {
      expect(chooseMatmulVariant(device, square)).toBe("gpu-tiled");
    }
  });

  it("still works after its scratch textures are released", async () => {
    const device = await gpu();
    releaseMatmulScratch(device);
    await checkAgainstReference(caseNamed("Linear layout"), "cpu-register-blocked", 31);
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
});

describe("matmulReference", () => {
  const referenceCases: MatmulCase[] = [
    { why: "plain, relu", a: [3, 4], b: [4, 5], bias: true, activation: "relu" },
    { why: "transposed a, silu", a: [2, 4, 3], b: [4, 5], transposeA: true, bias: true, activation: "silu" },
    {
      why: "transposed b, gelu, batched b",
      a: [3, 4],
      b: [2, 5, 4],
      transposeB: true,
      bias: true,
      activation: "gelu",
    },
    { why: "both transposed, both batched", a: [2, 4, 3], b: [2, 5, 4], transposeA: true, transposeB: true },
  ];
  it.each(referenceCases.map((testCase) => [testCase.why, testCase] as const))(
    "backward agrees with finite differences: %s",
    (_why, testCase) => {
      const options = {
        transposeA: testCase.transposeA,
        transposeB: testCase.transposeB,
        activation: testCase.activation,
      };
      const outputShape = matmulReference.outputShape(testCase.a, testCase.b, options);
      const N = outputShape.at(-1)!;
      const inputs = [
        randomValues(sizeOf(testCase.a), 41),
        randomValues(sizeOf(testCase.b), 42),
        randomValues(N, 43),
      ];
      const gradOutput = randomValues(sizeOf(outputShape), 44);
      const forward = ([a, b, bias]: Float64Array[]) =>
        matmulReference.forward(a, testCase.a, b, testCase.b, {
          ...options,
          bias: testCase.bias ? bias : null,
        });
      const analytic = matmulReference.backward(inputs[0], testCase.a, inputs[1], testCase.b, gradOutput, {
        ...options,
        bias: testCase.bias ? inputs[2] : null,
      });
      const fd = { atol: 1e-7, rtol: 1e-6 };
      expectClose(analytic.a, finiteDifferenceGradient(forward, inputs, gradOutput, 0), fd, "grad a");
      expectClose(analytic.b, finiteDifferenceGradient(forward, inputs, gradOutput, 1), fd, "grad b");
      if (testCase.bias) {
        expectClose(
          analytic.bias!,
          finiteDifferenceGradient(forward, inputs, gradOutput, 2),
          fd,
          "grad bias",
        );
      }
    },
  );

  it("computes a small product by hand", () => {
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
});

describe("matmul rejects bad input", () => {
  const rejects = async (
    aShape: Shape,
    bShape: Shape,
    options: Parameters<typeof matmul>[2],
    message: RegExp,
  ) => {
    const a = Tensor.zeros(await gpu(), aShape);
    const b = Tensor.zeros(await gpu(), bShape);
    try {
      expect(() => matmul(a, b, options)).toThrow(message);
    } finally {
      a.release();
      b.release();
    }
  };

  it("names the op and shapes when inner dimensions differ", async () => {
    await rejects([2, 3], [4, 5], {}, /^matmul: inner dimensions differ.*\(a: \[2, 3\], b: \[4, 5\]\)$/);
    await rejects(
      [2, 3],
      [5, 4],
      { transposeB: true },
      /matmul: inner dimensions differ: a gives K=3, b gives K=4 \(transposed\)/,
    );
  });

  it("rejects batch dimensions that neither match nor broadcast", async () => {
    await rejects(
      [2, 3, 4],
      [3, 4, 5],
      {},
      /matmul: batch dimensions differ.*\(a: \[2, 3, 4\], b: \[3, 4, 5\]\)/,
    );
  });

  it("rejects operands of rank below 2", async () => {
    await rejects([3], [3, 4], {}, /matmul: operands need at least 2 dimensions \(a: \[3\], b: \[3, 4\]\)/);
  });

  it("rejects a bias of the wrong shape", async () => {
    const bias = Tensor.zeros(await gpu(), [5]);
    await rejects([2, 3], [3, 4], { bias }, /matmul: bias must have shape \[4\] \(N\), got \[5\]/);
    bias.release();
  });

  it("rejects an unknown activation", async () => {
    await rejects(
      [2, 3],
      [3, 4],
      { activation: "tanh" as MatmulActivation },
      /matmul: unknown activation "tanh"/,
    );
  });

  it("rejects f16 operands", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return; // f16 tensors cannot even be made here
    const a = Tensor.zeros(device, [2, 3], "f16");
    const b = Tensor.zeros(device, [3, 4]);
    expect(() => matmul(a, b)).toThrow(
      /matmul: needs f32 operands, got f16 for a \(a: \[2, 3\], b: \[3, 4\]\)/,
    );
  });

  it("rejects an output larger than the adapter's largest storage buffer", async () => {
    const device = await gpu();
    const limit = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    const rows = Math.ceil(limit / 4 / 1024) + 1;
    await rejects(
      [rows, 1],
      [1, 1024],
      {},
      new RegExp(`matmul: output \\[${rows}, 1024\\] needs \\d+ bytes, more than`),
    );
  });

  it("rejects operands the forced CPU variant cannot pack", async () => {
    const device = await gpu();
    const K = 4 * device.limits.maxTextureDimension2D + 4;
    await rejects(
      [1, K],
      [K, 1],
      { variant: "cpu-register-blocked" },
      /matmul: variant cpu-register-blocked cannot pack these operands: K=\d+ needs \d+ texels per packed row/,
    );
  });
});
