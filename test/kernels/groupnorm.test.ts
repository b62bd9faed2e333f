/**
 * Group norm (ops/groupnorm/, kernels from ops/norm-core/): every variant forward and all three
 * gradients against the float64 reference as check-op.ts tables, the reference against finite
 * differences, bad input; the variant choice on its own; the WGSL `cxr kernels dump` prints being
 * the WGSL that runs.
 */
import { backward, type Gpu, groupNorm, noGrad, OpError, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { chooseGroupNormVariant } from "../../packages/kernels/src/ops/groupnorm/choose.ts";
import {
  GROUP_NORM_KERNELS,
  GROUP_NORM_VARIANTS,
  type GroupNormParams,
  type GroupNormVariant,
  groupNormOpReference,
  groupNormReference,
} from "../../packages/kernels/src/ops/groupnorm/index.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { gpu, randomValues, type Tolerance, upload } from "./helpers.ts";

/** The params plus which special forward bound a row is held to (the stability rows). */
type Params = GroupNormParams & { bound?: "offset" | "outliers" };

const affine = (shape: number[]) => [shape, [shape[1]], [shape[1]]];

const cases: OpCase<Params>[] = [
  {
    reason: "C = 1, one group, odd spatial",
    params: { shape: [1, 1, 7], groups: 1 },
    inputs: affine([1, 1, 7]),
  },
  { reason: "no spatial axes", params: { shape: [2, 4], groups: 2 }, inputs: affine([2, 4]) },
  {
    reason: "odd spatial, no gamma or beta",
    params: { shape: [2, 6, 5, 3], groups: 3 },
    inputs: [[2, 6, 5, 3]],
    spread: 2,
  },
  {
    reason: "groups of 2 x 7 = 14 values: a multiple of nothing useful",
    params: { shape: [3, 10, 7], groups: 5 },
    inputs: affine([3, 10, 7]),
  },
  {
    reason: "SD's 32 groups on odd 9x9",
    params: { shape: [1, 64, 9, 9], groups: 32 },
    inputs: affine([1, 64, 9, 9]),
  },
  {
    reason: "4608-value groups: several chunks each",
    params: { shape: [2, 32, 24, 24], groups: 4 },
    inputs: affine([2, 32, 24, 24]),
  },
  {
    reason: "the 64x64-latent UNet's 320-channel level: 40960 values per group (split designs)",
    params: { shape: [1, 320, 64, 64], groups: 32 },
    inputs: affine([1, 320, 64, 64]),
    variants: ["cpu-chunked", "gpu-workgroup"],
  },
  {
    reason: "a large common offset (no E[x²] - E[x]² cancellation)",
    params: { shape: [2, 8, 16, 16], groups: 4, bound: "offset" },
    inputs: [[2, 8, 16, 16]],
    values: [Array.from(randomValues(4096, 31), (value) => 1000 + value)],
    forwardOnly: true,
  },
  {
    // 256 groups of 1024 values whose first 16 are 1000: each group is one CPU chunk whose shift K
    // (the mean of its first 16 values) is an outlier, so the shifted sums cancel ~6 bits and only
    // the re-read about the chunk mean keeps M2 to f32 accuracy (this row fails without it).
    reason: "chunks that start with far outliers (the exact re-read path)",
    params: { shape: [1, 256, 1024], groups: 256, bound: "outliers" },
    inputs: [[1, 256, 1024]],
    values: [Array.from(randomValues(262144, 37), (value, index) => (index % 1024 < 16 ? 1000 : value))],
    forwardOnly: true,
  },
  {
    reason: "small, with gamma and beta, for finite differences",
    params: { shape: [2, 6, 5], groups: 3 },
    inputs: affine([2, 6, 5]),
    spread: 1.5,
    finiteDifferences: true,
  },
];

/**
 * Tolerances from f32 rounding: statistics over a group of `span` values err ~ sqrt(span) ulps
 * (blocked sums); gamma/beta gradients sum N x spatial terms per channel. The naive baseline sums
 * whole groups serially, so it gets 4x the forward and dx bounds.
 */
function tolerance({ params }: OpCase<Params>, variant: GroupNormVariant) {
  const [samples, channels] = params.shape;
  const size = params.shape.reduce((a, b) => a * b, 1);
  const naive = variant === "naive";
  if (params.bound === "offset") {
    // The f32 mean near 1000 alone carries up to half an ulp (3e-5), so ~3 ulps is the bound for our
    // variants; E[x²] - E[x]² would be off by ~1e-1 here. The naive baseline sums ~1e6-sized
    // partials serially (ulp 0.06), which moves the mean by ~1e-3: it gets a bound that says so.
    const forward = { atol: naive ? 4e-3 : 2e-4, rtol: 0 };
    return { forward, backward: forward };
  }
  if (params.bound === "outliers") {
    const forward = { atol: 2e-5, rtol: 3e-6 };
    return { forward, backward: forward };
  }
  const span = size / (samples * params.groups);
  const elementwise: Tolerance = { atol: (naive ? 4 : 1) * (5e-8 * Math.sqrt(span) + 1e-6), rtol: 1e-5 };
  const parameters: Tolerance = { atol: 1e-7 * (size / channels) + 2e-6, rtol: 1e-5 };
  return { forward: elementwise, backward: elementwise, gradients: [elementwise, parameters, parameters] };
}

const x246 = (device: Gpu) => Tensor.upload(device, randomValues(48, 1), [2, 6, 4]);

const badInputs: BadInputCase[] = [
  {
    reason: "groups that do not divide the channels",
    run: (device) => groupNorm(x246(device), 4),
    throws: "groupNorm: groups must be a positive divisor of the 6 channels, got 4 (x: [2, 6, 4])",
  },
  {
    reason: "zero groups",
    run: (device) => groupNorm(x246(device), 0),
    throws: /^groupNorm: groups must be a positive divisor/,
  },
  {
    reason: "gamma of the wrong length",
    run: (device) => groupNorm(x246(device), 3, Tensor.upload(device, randomValues(5, 2), [5])),
    throws: "groupNorm: gamma must have shape [6] (one value per channel) (x: [2, 6, 4], gamma: [5])",
  },
  {
    reason: "x without a channel axis",
    run: (device) => groupNorm(Tensor.upload(device, randomValues(6, 3), [6]), 1),
    throws: "groupNorm: needs x of shape [N, C, ...spatial] (x: [6])",
  },
  {
    reason: "a negative eps",
    run: (device) => groupNorm(x246(device), 3, null, null, -1),
    throws: /^groupNorm: eps must be a finite number >= 0/,
  },
];

checkOp(
  {
    name: "groupNorm",
    variants: GROUP_NORM_VARIANTS,
    reference: groupNormOpReference,
    run: ([x, gamma, beta], { groups, eps }, variant) =>
      groupNorm(x, groups, gamma ?? null, beta ?? null, eps ?? 1e-5, { variant }),
    tolerance,
    // dx is rstd times O(1) terms that cancel, so its rounding scales with the group's rstd (large for
    // a small group of nearly equal values): compare dx / rstd, as layer norm does.
    gradientScale: (index, [x, gamma], { shape, groups, eps }) => {
      if (index !== 0) return null;
      const { rstd } = groupNormReference.forward(x, shape, groups, gamma ?? null, null, eps);
      const span = x.length / rstd.length;
      return Float64Array.from(x, (_, at) => rstd[Math.floor(at / span)]);
    },
  },
  cases,
  badInputs,
);

describe("groupNorm: the rest", () => {
  it("records nothing under noGrad", async () => {
    const x = await upload(randomValues(24, 5), [2, 4, 3], true);
    const y = noGrad(() => groupNorm(x, 2));
    expect(y.requiresGrad).toBe(false);
    expect(y.node).toBeNull();
  });

  it("f16 input with an f32 gamma is refused (f16 runs all-f16 only: half.test.ts)", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return;
    const half = Tensor.upload(device, new Float32Array(48), [2, 6, 4], "f16");
    const gamma = Tensor.zeros(device, [6]);
    expect(() => groupNorm(half, 3, gamma)).toThrow(OpError);
    expect(() => groupNorm(half, 3, gamma)).toThrow(
      "groupNorm: f16 x needs f16 gamma, got f32 (cast it first) (x: [2, 6, 4], gamma: [6])",
    );
  });

  it("chooses per adapter kind: fused with 32+ statistics on lavapipe, split groups otherwise (no GPU needed)", () => {
    expect(chooseGroupNormVariant({ kind: "cpu" }, [2, 320, 64, 64], 32)).toBe("cpu-fused");
    expect(chooseGroupNormVariant({ kind: "cpu" }, [1, 64, 64, 64], 8)).toBe("cpu-chunked");
    expect(chooseGroupNormVariant({ kind: "cpu" }, [1, 64, 8, 8], 32)).toBe("cpu-fused");
    expect(chooseGroupNormVariant({ kind: "cpu" }, [1, 62, 8, 8], 31)).toBe("cpu-chunked");
    // One sample's groups decide, not the batch: a sample gets the same kernel (and bits) in any batch.
    for (const batch of [1, 2, 4, 8, 32]) {
      expect(chooseGroupNormVariant({ kind: "cpu" }, [batch, 16, 16, 16], 8), `batch ${batch}`).toBe(
        "cpu-chunked",
      );
      expect(chooseGroupNormVariant({ kind: "cpu" }, [batch, 320, 8, 8], 32), `batch ${batch}`).toBe(
        "cpu-fused",
      );
    }
    expect(chooseGroupNormVariant({ kind: "discrete" }, [2, 320, 64, 64], 32)).toBe("gpu-workgroup");
    expect(chooseGroupNormVariant({ kind: "integrated" }, [1, 64, 64, 64], 8)).toBe("gpu-workgroup");
  });

  it("the device's own choice follows its kind", async () => {
    const device = await gpu();
    expect(chooseGroupNormVariant(device, [2, 320, 64, 64], 32)).toBe(
      device.kind === "cpu" ? "cpu-fused" : "gpu-workgroup",
    );
  });

  it.each(GROUP_NORM_VARIANTS)(
    "%s: the WGSL that `cxr kernels dump` prints is what runs",
    async (variant) => {
      const device = await gpu();
      const passes = GROUP_NORM_KERNELS[variant];
      const dumped = dumpKernelSources({ op: "groupNorm", variant });
      for (const [pass, code] of Object.entries(passes)) {
        expect(dumped).toContain(`// groupNorm / ${variant} / ${pass}${code}\n`);
      }
      const compiled: string[] = [];
      const pipeline = device.pipeline.bind(device);
      const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
        compiled.push(code);
        return pipeline(code, label, entryPoint);
      };
      device.pipeline = spy;
      try {
        // Spatial 16 loads vec4, spatial 15 scalars: between them every pass of the variant runs.
        for (const [shape, lanes] of [
          [[2, 8, 4, 4], "vec4"],
          [[2, 6, 5, 3], "scalar"],
        ] as const) {
          compiled.length = 0;
          const size = shape.reduce((a, b) => a * b, 1);
          const x = await upload(randomValues(size, 3), [...shape], true);
          const gamma = await upload(randomValues(shape[1], 4), [shape[1]], true);
          const beta = await upload(randomValues(shape[1], 5), [shape[1]], true);
          const y = groupNorm(x, 2, gamma, beta, 1e-5, { variant });
          backward(y, await upload(randomValues(size, 6), [...shape]));
          await x.grad!.download();
          const other = lanes === "vec4" ? "-scalar" : "-vec4";
          const expected = Object.entries(passes)
            .filter(([pass]) => !pass.endsWith(other))
            .map(([, code]) => code);
          expect(new Set(compiled)).toEqual(new Set(expected));
          for (const tensor of [x, gamma, beta, y]) tensor.release();
        }
      } finally {
        delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
      }
    },
  );
});
