/**
 * Fused attention (ops/attention/): the table-driven checks of check-op.ts for every variant and for
 * the matmul-softmax-matmul composition, the variant choice on its own, linear memory, and the WGSL
 * that `cxr kernels dump attention` prints being the WGSL that runs.
 */
import {
  ATTENTION_VARIANTS,
  type AttentionShape,
  type AttentionVariant,
  attention,
  attentionCanUseSubgroups,
  attentionComposed,
  backward,
  type Gpu,
  noGrad,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { runBenchCase } from "../../packages/kernels/src/bench/runner.ts";
import { ATTENTION_BENCH_CASES, CPU_TIME_ROUNDS } from "../../packages/kernels/src/ops/attention/bench.ts";
import {
  type AttentionBackward,
  chooseAttentionBackward,
  chooseAttentionVariant,
  SUBGROUP_VARIANTS,
} from "../../packages/kernels/src/ops/attention/choose.ts";
import {
  ATTENTION_KERNELS,
  ATTENTION_PASSES,
  ATTENTION_SHARED_KERNELS,
  type AttentionParams,
  attentionChunkRows,
  attentionOpReference,
  CHUNKED_GEMM_KERNELS,
} from "../../packages/kernels/src/ops/attention/index.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { gpu, randomValues, upload } from "./helpers.ts";

const device = await gpu();
const runnable = ATTENTION_VARIANTS.filter(
  (variant) => !SUBGROUP_VARIANTS.includes(variant) || attentionCanUseSubgroups(device),
);

/** What a table row runs: a forward variant with one of the backwards (and a forced chunk size). */
interface Configuration {
  variant: AttentionVariant;
  backward: AttentionBackward;
  backwardChunkRows?: number;
}
const CONFIGURATIONS = new Map<string, Configuration>(
  runnable.flatMap((variant): [string, Configuration][] => [
    [`${variant}, recompute backward`, { variant, backward: "recompute" }],
    [`${variant}, chunked-scores backward`, { variant, backward: "chunked-scores" }],
    [
      `${variant}, chunked-scores backward in chunks of 5 query rows`,
      { variant, backward: "chunked-scores", backwardChunkRows: 5 },
    ],
    // chunked-gemm's kernels do not depend on the variant: run it after the chosen subgroup one.
    ...(variant === "cpu-subgroup"
      ? ([
          [`${variant}, chunked-gemm backward`, { variant, backward: "chunked-gemm" }],
          [
            `${variant}, chunked-gemm backward in chunks of 5 query rows`,
            { variant, backward: "chunked-gemm", backwardChunkRows: 5 },
          ],
        ] as [string, Configuration][])
      : []),
  ]),
);

/** [batch, heads, queryLength, keyLength, headDim] */
type Dims = [number, number, number, number, number];

function maskValues(batch: number, keyLength: number, dropped: number[][]): Float64Array {
  const mask = new Float64Array(batch * keyLength).fill(1);
  dropped.forEach((keys, b) => {
    for (const j of keys) mask[b * keyLength + j] = 0;
  });
  return mask;
}

/** A table row: q, k, v of the given sizes; `dropped` lists the keys masked per batch. */
function row(
  reason: string,
  [batch, heads, queryLength, keyLength, headDim]: Dims,
  extra: { scale?: number; dropped?: number[][]; finiteDifferences?: boolean; spread?: number } = {},
): OpCase<AttentionParams> {
  return {
    reason,
    params: {
      shape: { batch, heads, queryLength, keyLength, headDim },
      scale: extra.scale,
      keyMask: extra.dropped ? maskValues(batch, keyLength, extra.dropped) : undefined,
    },
    inputs: [
      [batch, heads, queryLength, headDim],
      [batch, heads, keyLength, headDim],
      [batch, heads, keyLength, headDim],
    ],
    spread: extra.spread ?? 1.5,
    finiteDifferences: extra.finiteDifferences,
  };
}

const ALL_KEYS_OF_13 = Array.from({ length: 13 }, (_, j) => j);
const cases: OpCase<AttentionParams>[] = [
  row("size 1 everywhere", [1, 1, 1, 1, 1]),
  row("one query against CLIP's 77 tokens; odd D is zero-padded to 8", [1, 2, 1, 77, 7]),
  row("a single key: every probability is 1", [2, 1, 77, 1, 40]),
  row("self-attention, length not a multiple of the block, scale 0.3", [1, 2, 129, 129, 64], { scale: 0.3 }),
  row("cross-attention at SD 1.x's largest head size", [2, 1, 65, 77, 160]),
  row("dropped keys in one batch, none in the other", [2, 2, 33, 20, 64], { dropped: [[0, 5, 19], []] }),
  row("batch 1 fully masked: its rows output zeros", [2, 3, 9, 13, 8], { dropped: [[], ALL_KEYS_OF_13] }),
  row("cross-attention, more keys than queries, odd sizes, mask and scale", [2, 2, 37, 50, 24], {
    dropped: [[3, 49], [0]],
    scale: 0.4,
  }),
  row(
    "head dim 1 over odd lengths that cross a workgroup's two rows per invocation (128)",
    [1, 2, 257, 131, 1],
  ),
  row("1024 latent queries x CLIP's 77 tokens (the UNet's cross-attention, Lq != Lk)", [1, 2, 1024, 77, 64]),
  row("large: 300 queries x 259 keys at the largest head dimension, masked", [1, 1, 300, 259, 256], {
    dropped: [[0, 128, 258]],
  }),
  row("small, masked and scaled, for finite differences", [2, 2, 3, 4, 5], {
    dropped: [[1], [3]],
    scale: 0.6,
    spread: 1,
    finiteDifferences: true,
  }),
];

/** Runs `fn` with the case's mask uploaded (and released by the caller's tensors' owner: the test). */
const withMask = (device: Gpu, { shape, keyMask }: AttentionParams) =>
  keyMask ? Tensor.upload(device, Float32Array.from(keyMask), [shape.batch, shape.keyLength]) : undefined;

// f32 dot products over D and sums over Lk: errors grow with both; values here are O(1).
const tolerance = ({ params: { shape } }: OpCase<AttentionParams>) => {
  const within = { atol: 2e-6 * Math.sqrt(shape.headDim + shape.keyLength + shape.queryLength), rtol: 1e-4 };
  return { forward: within, backward: within };
};

const badInputs: BadInputCase[] = [
  {
    reason: "q of rank 3",
    run: (device) =>
      attention(
        Tensor.upload(device, randomValues(24, 4), [2, 3, 4]),
        Tensor.upload(device, randomValues(80, 2), [1, 2, 5, 8]),
        Tensor.upload(device, randomValues(80, 3), [1, 2, 5, 8]),
      ),
    throws:
      "attention: q must be [batch, heads, length, headDim] (q: [2, 3, 4], k: [1, 2, 5, 8], v: [1, 2, 5, 8])",
  },
  {
    reason: "k with another head dimension",
    run: (device) =>
      attention(
        Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]),
        Tensor.upload(device, randomValues(40, 5), [1, 2, 5, 4]),
        Tensor.upload(device, randomValues(80, 3), [1, 2, 5, 8]),
      ),
    throws: "attention: k must match q in batch, heads and head dimension (q: [1, 2, 3, 8], k: [1, 2, 5, 4])",
  },
  {
    reason: "v shorter than k",
    run: (device) =>
      attention(
        Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]),
        Tensor.upload(device, randomValues(80, 2), [1, 2, 5, 8]),
        Tensor.upload(device, randomValues(64, 6), [1, 2, 4, 8]),
      ),
    throws: "attention: v must have the shape of k (k: [1, 2, 5, 8], v: [1, 2, 4, 8])",
  },
  {
    reason: "a key mask of the wrong shape",
    run: (device) => {
      const k = Tensor.upload(device, randomValues(80, 2), [1, 2, 5, 8]);
      const q = Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]);
      return attention(q, k, k, { keyMask: Tensor.upload(device, [1, 1, 1], [1, 3]) });
    },
    throws:
      "attention: keyMask must be [batch, keyLength] (q: [1, 2, 3, 8], k: [1, 2, 5, 8], keyMask: [1, 3])",
  },
  {
    reason: "the composition checks the key mask too",
    run: (device) => {
      const k = Tensor.upload(device, randomValues(80, 2), [1, 2, 5, 8]);
      const q = Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]);
      return attentionComposed(q, k, k, { keyMask: Tensor.upload(device, [1, 1, 1], [1, 3]) });
    },
    throws:
      "attentionComposed: keyMask must be [batch, keyLength] (q: [1, 2, 3, 8], k: [1, 2, 5, 8], keyMask: [1, 3])",
  },
  {
    reason: "a scale that is not finite",
    run: (device) => {
      const q = Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]);
      return attention(q, q, q, { scale: Number.POSITIVE_INFINITY });
    },
    throws: "attention: scale must be finite, got Infinity (q: [1, 2, 3, 8])",
  },
  {
    reason: "an unknown variant",
    run: (device) => {
      const q = Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]);
      return attention(q, q, q, { variant: "texture" as AttentionVariant });
    },
    throws: 'attention: unknown variant "texture"',
  },
  {
    reason: "an unknown backward",
    run: (device) => {
      const q = Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]);
      return attention(q, q, q, { backward: "atomic" as AttentionBackward });
    },
    throws: 'attention: unknown backward "atomic"',
  },
  {
    reason: "a chunk size that is not a positive integer",
    run: (device) => {
      const q = Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]);
      return attention(q, q, q, { backward: "chunked-scores", backwardChunkRows: 0.5 });
    },
    throws: "attention: backwardChunkRows must be a positive integer, got 0.5",
  },
  {
    reason: "chunked-gemm with a variant without subgroups",
    run: (device) => {
      const q = Tensor.upload(device, randomValues(48, 1), [1, 2, 3, 8]);
      return attention(q, q, q, { variant: "gpu-tiled", backward: "chunked-gemm" });
    },
    throws:
      "attention: backward chunked-gemm needs a subgroup variant (cpu-subgroup, cpu-rows), got gpu-tiled",
  },
  {
    reason: "a head dimension over the maximum",
    run: (device) => {
      const wide = Tensor.upload(device, new Float64Array(264), [1, 1, 1, 264]);
      return attention(wide, wide, wide);
    },
    throws:
      "attention: head dimension 264 exceeds the supported maximum 256 (q: [1, 1, 1, 264], k: [1, 1, 1, 264])",
  },
  {
    reason: "u32 keys",
    run: (device) => {
      const q = Tensor.upload(device, randomValues(8, 1), [1, 1, 1, 8]);
      return attention(q, Tensor.upload(device, new Array(8).fill(1), [1, 1, 1, 8], "u32"), q);
    },
    throws: "attention: needs f32 k, got u32",
  },
];

checkOp(
  {
    name: "attention",
    variants: [...CONFIGURATIONS.keys()],
    reference: attentionOpReference,
    run: ([q, k, v], params, configuration, device) =>
      attention(q, k, v, {
        ...CONFIGURATIONS.get(configuration)!,
        scale: params.scale,
        keyMask: withMask(device, params),
      }),
    tolerance,
  },
  cases,
  badInputs,
);

checkOp(
  {
    name: "attentionComposed (matmul, softmax, matmul: the benchmark baseline)",
    variants: ["composed"],
    reference: attentionOpReference,
    run: ([q, k, v], params, _variant, device) =>
      attentionComposed(q, k, v, { scale: params.scale, keyMask: withMask(device, params) }),
    tolerance,
  },
  cases.filter((testCase) => !testCase.finiteDifferences),
);

describe("attention: the rest", () => {
  it.each(runnable)(
    "%s: a fully masked batch's outputs and key gradients are exactly zero",
    async (variant) => {
      const [batch, heads, queryLength, keyLength, headDim] = [2, 3, 9, 13, 8];
      const q = await upload(
        randomValues(batch * heads * queryLength * headDim, 1),
        [batch, heads, queryLength, headDim],
        true,
      );
      const k = await upload(
        randomValues(batch * heads * keyLength * headDim, 2),
        [batch, heads, keyLength, headDim],
        true,
      );
      const v = await upload(
        randomValues(batch * heads * keyLength * headDim, 3),
        [batch, heads, keyLength, headDim],
        true,
      );
      const keyMask = await upload(maskValues(batch, keyLength, [[], ALL_KEYS_OF_13]), [batch, keyLength]);
      const output = attention(q, k, v, { variant, keyMask });
      const values = await output.download();
      backward(output, await upload(randomValues(output.size, 4), output.shape));
      const gradKey = await k.grad!.download();
      expect(values.subarray(values.length / 2).every((value) => value === 0)).toBe(true);
      expect(gradKey.subarray(gradKey.length / 2).every((value) => value === 0)).toBe(true);
      for (const tensor of [q, k, v, keyMask, output]) tensor.release();
    },
  );

  it("f16 q with f32 k and v is refused (f16 runs all-f16 only: half.test.ts)", async () => {
    if (!device.features.has("shader-f16")) return;
    const k = await upload(randomValues(80, 2), [1, 2, 5, 8]);
    const half = Tensor.upload(device, new Float32Array(48), [1, 2, 3, 8], "f16");
    expect(() => attention(half, k, k)).toThrow("attention: f16 q needs f16 k, got f32 (cast it first)");
  });

  it("chooses per adapter kind and subgroup support (no GPU needed)", () => {
    const shape: AttentionShape = { batch: 1, heads: 8, queryLength: 1024, keyLength: 1024, headDim: 64 };
    const adapter = (kind: "cpu" | "discrete", subgroups: boolean, subgroupMinSize: number) => ({
      kind,
      features: new Set(subgroups ? ["subgroups"] : []),
      device: { adapterInfo: { subgroupMinSize } },
    });
    expect(chooseAttentionVariant(adapter("cpu", true, 8), shape)).toBe("cpu-subgroup");
    expect(chooseAttentionVariant(adapter("cpu", true, 8), { ...shape, queryLength: 1, keyLength: 77 })).toBe(
      "cpu-subgroup",
    );
    expect(chooseAttentionVariant(adapter("cpu", true, 4), shape)).toBe("gpu-tiled");
    expect(chooseAttentionVariant(adapter("cpu", false, 8), shape)).toBe("gpu-tiled");
    expect(chooseAttentionVariant(adapter("discrete", true, 32), shape)).toBe("gpu-tiled");
    const expected = device.kind === "cpu" && attentionCanUseSubgroups(device) ? "cpu-subgroup" : "gpu-tiled";
    expect(chooseAttentionVariant(device, shape)).toBe(expected);
    expect(chooseAttentionBackward(adapter("cpu", true, 8), shape)).toBe("chunked-gemm");
    const textKeys = { ...shape, keyLength: 77 }; // cross-attention: too few keys for chunked-gemm's blocks
    expect(chooseAttentionBackward(adapter("cpu", true, 8), textKeys)).toBe("chunked-scores");
    expect(chooseAttentionBackward(adapter("cpu", true, 8), { ...shape, keyLength: 256 })).toBe(
      "chunked-gemm",
    );
    expect(chooseAttentionBackward(adapter("cpu", true, 8), shape, "gpu-tiled")).toBe("chunked-scores");
    expect(chooseAttentionBackward(adapter("cpu", false, 8), shape)).toBe("chunked-scores");
    expect(chooseAttentionBackward(adapter("discrete", true, 32), shape)).toBe("recompute");
  });

  it("sizes backward chunks from each scratch's budget and minimum rows", () => {
    const at = (length: number) => ({
      batch: 1,
      heads: 8,
      queryLength: length,
      keyLength: length,
      headDim: 64,
    });
    // chunked-scores: 8 bytes per pair in 16 MiB; chunked-gemm: 12 bytes per pair in 24 MiB.
    expect(attentionChunkRows(device, at(1024), undefined, "chunked-scores")).toBe(256);
    expect(attentionChunkRows(device, at(1024), undefined, "chunked-gemm")).toBe(256);
    expect(attentionChunkRows(device, at(2048), undefined, "chunked-scores")).toBe(128);
    // Past the budget chunked-gemm keeps a dQ workgroup's 256 rows (the scratch grows linearly).
    expect(attentionChunkRows(device, at(2048), undefined, "chunked-gemm")).toBe(256);
    // Rows spread evenly: 1000 rows at 256 per chunk -> 4 chunks of 250.
    expect(attentionChunkRows(device, { ...at(1024), queryLength: 1000 }, undefined, "chunked-gemm")).toBe(
      250,
    );
    expect(attentionChunkRows(device, at(100), 7, "chunked-gemm")).toBe(7);
  });

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

  it("the fwd+bwd bench case prints fused and composed side by side with CPU time and memory", async () => {
    const benchCase = ATTENTION_BENCH_CASES.find(
      (candidate) => candidate.shape === "B2 H2 L1024x77 D64 fp32 fwd+bwd",
    );
    expect(benchCase).toBeDefined();
    const result = await runBenchCase(device, benchCase!, 1);
    expect(result.naiveLabel).toContain("matmul-softmax-matmul composition");
    expect(result.speedup).toBeGreaterThan(0);
    expect(result.extra["mem fwd+bwd fused/composed"]).toMatch(/^[0-9.]+ MiB \/ [0-9.]+ MiB$/);
    const cpu = result.extra[`CPU ms fused/composed (interleaved, median of ${CPU_TIME_ROUNDS})`];
    if (device.kind === "cpu") expect(cpu).toMatch(/^[0-9]+ \/ [0-9]+ = [0-9.]+x$/);
    else expect(cpu).toBeUndefined();
  });

  it("records nothing under noGrad", async () => {
    const q = await upload(randomValues(16, 1), [1, 1, 2, 8], true);
    const output = noGrad(() => attention(q, q, q));
    expect(output.requiresGrad).toBe(false);
    expect(output.node).toBeNull();
  });

  it.each([...CONFIGURATIONS.keys()])(
    "%s: the WGSL that `cxr kernels dump` prints is what runs",
    async (name) => {
      const configuration = CONFIGURATIONS.get(name)!;
      const compiled: string[] = [];
      const pipeline = device.pipeline.bind(device);
      const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
        compiled.push(code);
        return pipeline(code, label, entryPoint);
      };
      device.pipeline = spy;
      try {
        const shape = [1, 1, 3, 6]; // odd D: the padding kernel runs too
        const q = await upload(randomValues(18, 1), shape, true);
        const keys = await upload(randomValues(18, 3), shape); // not trainable: no gradient sums
        const output = attention(q, keys, keys, configuration);
        await output.download();
        backward(output, await upload(randomValues(18, 2), shape));
        await q.grad!.download();
        const kernels = ATTENTION_KERNELS[configuration.variant];
        const backwardKernels = {
          recompute: [kernels.backwardQuery, kernels.backwardKeyValue],
          "chunked-scores": [kernels.backwardQueryChunk, kernels.backwardKeyValueChunk],
          "chunked-gemm": [
            CHUNKED_GEMM_KERNELS.gemmScores,
            CHUNKED_GEMM_KERNELS.gemmProduct,
            CHUNKED_GEMM_KERNELS.gemmProductPair,
          ],
        }[configuration.backward];
        const passes = Object.values(ATTENTION_PASSES[configuration.variant]);
        for (const code of backwardKernels) expect(passes).toContain(code);
        expect(new Set(compiled)).toEqual(
          new Set([
            ATTENTION_SHARED_KERNELS.resizeRows,
            kernels.forward,
            ATTENTION_SHARED_KERNELS.rowStats,
            ...backwardKernels,
          ]),
        );
        for (const tensor of [q, keys, output]) tensor.release();
      } finally {
        delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
      }
    },
  );
});
