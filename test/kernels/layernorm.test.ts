/**
 * Layer norm (ops/layernorm/, statistics from ops/norm-core/): both variants forward and all three
 * gradients against the float64 reference as check-op.ts tables, the reference against finite
 * differences, bad input; the variant choice on its own; the WGSL `cxr kernels dump` prints being
 * the WGSL that runs.
 */
import { backward, type Gpu, layerNorm, noGrad, OpError, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { chooseLayerNormVariant } from "../../packages/kernels/src/ops/layernorm/choose.ts";
import {
  LAYER_NORM_KERNELS,
  LAYER_NORM_VARIANTS,
  type LayerNormParams,
  layerNormOpReference,
  layerNormReference,
} from "../../packages/kernels/src/ops/layernorm/index.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { asFloat32, expectClose, gpu, randomValues, type Tolerance, upload } from "./helpers.ts";

const affine = (shape: number[]) => [shape, [shape.at(-1)!], [shape.at(-1)!]];

const cases: OpCase<LayerNormParams>[] = [
  { reason: "D = 1: variance 0, y = beta, dx = 0", params: { shape: [1] }, inputs: affine([1]), spread: 2 },
  { reason: "odd D: scalar loads", params: { shape: [3, 7] }, inputs: affine([3, 7]), spread: 2 },
  { reason: "vec4 loads, no gamma or beta", params: { shape: [2, 3, 8] }, inputs: [[2, 3, 8]], spread: 2 },
  { reason: "a size-1 middle axis", params: { shape: [5, 1, 12] }, inputs: affine([5, 1, 12]), spread: 2 },
  {
    reason: "one long odd row: several chunks",
    params: { shape: [1, 5003] },
    inputs: affine([1, 5003]),
    spread: 2,
  },
  {
    reason: "many short rows: gamma/beta sum over 4096 rows",
    params: { shape: [4096, 4] },
    inputs: affine([4096, 4]),
    spread: 2,
  },
  {
    reason: "the 64x64 UNet's 32x32 transformer tokens, D = 320",
    params: { shape: [2, 1024, 320] },
    inputs: affine([2, 1024, 320]),
    spread: 2,
  },
  {
    reason: "small, with gamma and beta, for finite differences",
    params: { shape: [5, 7] },
    inputs: affine([5, 7]),
    spread: 1.5,
    finiteDifferences: true,
  },
];

const x46 = (device: Gpu) => Tensor.upload(device, randomValues(24, 1), [4, 6]);

const badInputs: BadInputCase[] = [
  {
    reason: "gamma of the wrong length",
    run: (device) => layerNorm(x46(device), Tensor.upload(device, randomValues(4, 2), [4])),
    throws: "layerNorm: gamma must have shape [6] (the last axis of x) (x: [4, 6], gamma: [4])",
  },
  {
    reason: "beta of the wrong rank",
    run: (device) => layerNorm(x46(device), null, Tensor.upload(device, randomValues(24, 3), [4, 6])),
    throws: /^layerNorm: beta must have shape \[6\]/,
  },
  {
    reason: "an eps that is not a number",
    run: (device) => layerNorm(x46(device), null, null, Number.NaN),
    throws: /^layerNorm: eps must be a finite number >= 0/,
  },
];

checkOp(
  {
    name: "layerNorm",
    variants: LAYER_NORM_VARIANTS,
    reference: layerNormOpReference,
    run: ([x, gamma, beta], { eps }, variant) =>
      layerNorm(x, gamma ?? null, beta ?? null, eps ?? 1e-5, { variant }),
    // Statistics over D values err ~ sqrt(D) ulps; gamma/beta gradients sum over the rows.
    tolerance: ({ params: { shape } }) => {
      const width = shape.at(-1)!;
      const rows = shape.reduce((a, b) => a * b, 1) / width;
      const elementwise: Tolerance = { atol: 5e-8 * Math.sqrt(width) + 1e-6, rtol: 1e-5 };
      const parameters: Tolerance = { atol: 1e-7 * rows + 2e-6, rtol: 1e-5 };
      return {
        forward: elementwise,
        backward: elementwise,
        gradients: [elementwise, parameters, parameters],
      };
    },
    // dx is rstd times O(1) terms that cancel, so its rounding scales with the row's rstd (large for
    // short rows of nearly equal values): compare dx / rstd.
    gradientScale: (index, [x, gamma], { shape, eps }) => {
      if (index !== 0) return null;
      const width = shape.at(-1)!;
      const { rstd } = layerNormReference.forward(x, width, gamma ?? null, null, eps);
      return Float64Array.from(x, (_, at) => rstd[Math.floor(at / width)]);
    },
  },
  cases,
  badInputs,
);

describe("layerNorm: the rest", () => {
  it.each(LAYER_NORM_VARIANTS)(
    "%s: gamma alone gets its gradient when only gamma is trainable",
    async (variant) => {
      const shape = [6, 10];
      const x = asFloat32(randomValues(60, 3));
      const gamma = asFloat32(randomValues(10, 4));
      const gradOutput = asFloat32(randomValues(60, 5));
      const xTensor = await upload(x, shape);
      const gammaTensor = await upload(gamma, [10], true);
      const y = layerNorm(xTensor, gammaTensor, null, 1e-5, { variant });
      backward(y, await upload(gradOutput, shape));
      expect(xTensor.grad).toBeNull();
      expectClose(
        await gammaTensor.grad!.download(),
        layerNormReference.backward(x, 10, gamma, gradOutput).gradGamma,
        { atol: 5e-6, rtol: 1e-5 },
        "dgamma only",
      );
    },
  );

  it("records nothing under noGrad", async () => {
    const x = await upload(randomValues(12, 5), [3, 4], true);
    const y = noGrad(() => layerNorm(x));
    expect(y.node).toBeNull();
  });

  it("f16 input with an f32 gamma is refused (f16 runs all-f16 only: half.test.ts)", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return;
    const half = Tensor.upload(device, new Float32Array(24), [4, 6], "f16");
    const gamma = Tensor.zeros(device, [6]);
    expect(() => layerNorm(half, gamma)).toThrow(OpError);
    expect(() => layerNorm(half, gamma)).toThrow(
      "layerNorm: f16 x needs f16 gamma, got f32 (cast it first) (x: [4, 6], gamma: [6])",
    );
  });

  it("chooses per adapter kind (no GPU needed)", () => {
    expect(chooseLayerNormVariant({ kind: "cpu" }, [2, 1024, 320])).toBe("cpu-chunked");
    expect(chooseLayerNormVariant({ kind: "cpu" }, [1, 5003])).toBe("cpu-chunked");
    expect(chooseLayerNormVariant({ kind: "discrete" }, [2, 1024, 320])).toBe("gpu-workgroup");
    expect(chooseLayerNormVariant({ kind: "integrated" }, [1])).toBe("gpu-workgroup");
  });

  it.each(LAYER_NORM_VARIANTS)(
    "%s: the WGSL that `cxr kernels dump` prints is what runs",
    async (variant) => {
      const device = await gpu();
      const passes = LAYER_NORM_KERNELS[variant];
      const dumped = dumpKernelSources({ op: "layerNorm", variant });
      for (const [pass, code] of Object.entries(passes)) {
        expect(dumped).toContain(`// layerNorm / ${variant} / ${pass}${code}\n`);
      }
      const compiled: string[] = [];
      const pipeline = device.pipeline.bind(device);
      const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
        compiled.push(code);
        return pipeline(code, label, entryPoint);
      };
      device.pipeline = spy;
      try {
        for (const [shape, lanes] of [
          [[3, 8], "vec4"],
          [[3, 7], "scalar"],
        ] as const) {
          compiled.length = 0;
          const size = shape[0] * shape[1];
          const x = await upload(randomValues(size, 3), [...shape], true);
          const gamma = await upload(randomValues(shape[1], 4), [shape[1]], true);
          const beta = await upload(randomValues(shape[1], 5), [shape[1]], true);
          const y = layerNorm(x, gamma, beta, 1e-5, { variant });
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
