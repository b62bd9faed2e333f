/**
 * Reductions (ops/reduce/): sum, mean and max over any axes, and sumToShape, as check-op.ts tables
 * against the float64 reference; the chunk planning on its own; the WGSL that `cxr kernels dump`
 * prints being the WGSL that runs.
 */
import { backward, type Gpu, max, mean, noGrad, OpError, sum, sumToShape, Tensor } from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import { parallelTarget, reductionChunkLength } from "../../packages/kernels/src/ops/reduce/choose.ts";
import {
  REDUCE_KERNELS,
  REDUCE_VARIANTS,
  reduce,
  reductionLayout,
} from "../../packages/kernels/src/ops/reduce/index.ts";
import {
  type ReduceParams,
  type ReductionKind,
  reduceOpReference,
  reduceReference,
  type SumToShapeParams,
  sumToShapeOpReference,
} from "../../packages/kernels/src/ops/reduce/reference.ts";
import { dumpKernelSources } from "../../packages/kernels/src/ops/sources.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { gpu, randomValues, upload } from "./helpers.ts";

const KINDS: ReductionKind[] = ["sum", "mean", "max"];

/** Shapes and axes every kind runs over, each with why it is there. */
const LAYOUTS: { reason: string; shape: number[]; axes?: number[]; keepDims?: boolean }[] = [
  { reason: "a single element, every axis", shape: [1] },
  { reason: "an odd length", shape: [7], axes: [0] },
  { reason: "the middle axis", shape: [3, 4, 5], axes: [1] },
  { reason: "the last axis by a negative index, keepDims", shape: [3, 4, 5], axes: [-1], keepDims: true },
  { reason: "axes that are not adjacent: two blocks, two passes", shape: [3, 4, 5], axes: [0, 2] },
  { reason: "only a size-1 axis: nothing to reduce (a copy)", shape: [2, 1, 3], axes: [1] },
  {
    reason: "the [C] statistics of an NCHW tensor, keepDims",
    shape: [2, 3, 4, 5],
    axes: [0, 2, 3],
    keepDims: true,
  },
  { reason: "a long strided reduction: split into chunks and finished", shape: [5, 300, 7], axes: [1] },
  { reason: "everything, odd length: three passes", shape: [100003] },
  { reason: "long rows, the last axis", shape: [64, 4096], axes: [1] },
  { reason: "a long first axis over 33 columns", shape: [4096, 33], axes: [0] },
];

/** A [1, 5000] row of -1 with two equal maxima, at 1234 and 4321: they fall in different chunks. */
const LONG_TIE = Array.from({ length: 5000 }, (_, index) => (index === 1234 || index === 4321 ? 9 : -1));

const reduceCases: OpCase<ReduceParams>[] = [
  ...KINDS.flatMap((kind) =>
    LAYOUTS.map(({ reason, shape, axes, keepDims }) => ({
      reason: `${kind}: ${reason}`,
      params: { kind, shape, axes, keepDims },
      inputs: [shape],
    })),
  ),
  {
    reason: "max: ties go to the first maximum (row 0: maxima at 1 and 3; row 1: all equal)",
    params: { kind: "max", shape: [2, 4], axes: [1] },
    inputs: [[2, 4]],
    values: [[0, 5, 1, 5, 1, 1, 1, 1]],
  },
  {
    reason: "max: a tie across chunks goes to the earlier chunk",
    params: { kind: "max", shape: [1, 5000], axes: [1] },
    inputs: [[1, 5000]],
    values: [LONG_TIE],
  },
  {
    reason: "max: over two reduced blocks, the first maximum of the combined axes wins",
    // Output j collects x[a, j, c]; equal maxima at (0, j, 2) and (1, j, 0).
    params: { kind: "max", shape: [2, 2, 3], axes: [0, 2] },
    inputs: [[2, 2, 3]],
    values: [[0, 0, 4, 1, 1, 1, 4, 0, 0, 2, 2, 2]],
  },
  {
    reason: "sum over non-adjacent axes, for finite differences",
    params: { kind: "sum", shape: [3, 4, 5], axes: [0, 2] },
    inputs: [[3, 4, 5]],
    finiteDifferences: true,
  },
  {
    reason: "mean over non-adjacent axes, for finite differences",
    params: { kind: "mean", shape: [3, 4, 5], axes: [0, 2] },
    inputs: [[3, 4, 5]],
    finiteDifferences: true,
  },
  {
    reason: "max of continuous values (no ties), for finite differences",
    params: { kind: "max", shape: [4, 6], axes: [1] },
    inputs: [[4, 6]],
    finiteDifferences: true,
  },
];

const reduceBadInputs: BadInputCase[] = [
  {
    reason: "an axis out of range",
    run: (device) => sum(Tensor.upload(device, randomValues(24, 1), [2, 3, 4]), 3),
    throws: "sum: axis 3 is out of range for rank 3 (x: [2, 3, 4])",
  },
  {
    reason: "an axis listed twice",
    run: (device) => mean(Tensor.upload(device, randomValues(24, 1), [2, 3, 4]), [1, -2]),
    throws: "mean: axis -2 is listed twice (x: [2, 3, 4])",
  },
  {
    reason: "an axis that is not an integer",
    run: (device) => max(Tensor.upload(device, randomValues(24, 1), [2, 3, 4]), [0.5]),
    throws: /^max: axis 0.5 is out of range/,
  },
  {
    reason: "axes that alternate with kept ones too often",
    run: (device) =>
      sum(Tensor.upload(device, new Float64Array(512), [2, 2, 2, 2, 2, 2, 2, 2, 2]), [0, 2, 4, 6, 8]),
    throws: /^sum: axes \[0, 2, 4, 6, 8\] alternate too often \(9 runs/,
  },
];

checkOp(
  {
    name: "reduce",
    variants: REDUCE_VARIANTS,
    reference: reduceOpReference,
    run: ([x], { kind, axes, keepDims }) => reduce(kind, x, axes, { keepDims }),
    // Sums of `count` standard-normal values have magnitude ~ sqrt(count) (means ~ 1 / sqrt(count));
    // chunked f32 sums stay within ~1e-7 of that magnitude (measured), so allow 1e-6 of it. Max and
    // its scatter are exact; the broadcast backward is one f32 multiply.
    tolerance: ({ params: { kind, shape, axes } }) => {
      if (kind === "max") return { forward: { atol: 0, rtol: 0 }, backward: { atol: 0, rtol: 0 } };
      const { count } = reductionLayout(kind, shape, axes, false);
      const magnitude = kind === "sum" ? Math.sqrt(count) : 1 / Math.sqrt(count);
      return { forward: { atol: 1e-6 * magnitude + 1e-8, rtol: 1e-6 }, backward: { atol: 0, rtol: 1e-6 } };
    },
  },
  reduceCases,
  reduceBadInputs,
);

const TO_SHAPE: { reason: string; shape: number[]; target: number[] }[] = [
  { reason: "a leading axis broadcast", shape: [2, 3, 4], target: [3, 4] },
  { reason: "size-1 axes broadcast", shape: [2, 3, 4], target: [1, 3, 1] },
  { reason: "two leading axes", shape: [2, 3, 4], target: [4] },
  { reason: "everything to [1]", shape: [2, 3, 4], target: [1] },
  { reason: "a size-1 axis and a leading one", shape: [5, 1], target: [1] },
  { reason: "nothing to reduce: still a new tensor", shape: [2, 3, 4], target: [2, 3, 4] },
  { reason: "a conv bias broadcast over NCHW", shape: [2, 320, 16, 16], target: [320, 1, 1] },
];

checkOp(
  {
    name: "sumToShape",
    variants: REDUCE_VARIANTS,
    reference: sumToShapeOpReference,
    run: ([x], { target }) => sumToShape(x, target),
    // Sums of up to 512 values; the backward broadcast copies exactly.
    tolerance: () => ({ forward: { atol: 1e-5, rtol: 1e-5 }, backward: { atol: 0, rtol: 0 } }),
  },
  TO_SHAPE.map(
    ({ reason, shape, target }): OpCase<SumToShapeParams> => ({
      reason,
      params: { shape, target },
      inputs: [shape],
    }),
  ),
  [
    {
      reason: "an axis that cannot sum to the target",
      run: (device) => sumToShape(Tensor.upload(device, randomValues(24, 1), [2, 3, 4]), [2, 4]),
      throws: "sumToShape: axis 1 has 3 elements, which cannot sum to 2 (x: [2, 3, 4], shape: [2, 4])",
    },
    {
      reason: "a target with more axes than the tensor",
      run: (device) => sumToShape(Tensor.upload(device, randomValues(24, 1), [2, 3, 4]), [1, 2, 3, 4]),
      throws:
        "sumToShape: the target shape has more axes than the tensor (x: [2, 3, 4], shape: [1, 2, 3, 4])",
    },
    {
      reason: "a target dimension that is not a positive integer",
      run: (device) => sumToShape(Tensor.upload(device, randomValues(24, 1), [2, 3, 4]), [0, 4]),
      throws: "sumToShape: invalid target dimension 0 (x: [2, 3, 4], shape: [0, 4])",
    },
  ],
);

describe("reduce: the rest", () => {
  it("sumToShape returns a new tensor for every target, and its input may be released", async () => {
    for (const { shape, target } of TO_SHAPE) {
      const x = await upload(
        randomValues(
          shape.reduce((a, b) => a * b, 1),
          3,
        ),
        shape,
      );
      const y = sumToShape(x, target);
      expect(y.shape).toEqual(target);
      expect(y).not.toBe(x);
      expect(y.buffer).not.toBe(x.buffer);
      x.release();
      y.release();
    }
    const x = await upload([1, 2, 3, 4], [2, 2]);
    const y = sumToShape(x, [2, 2]);
    x.release();
    expect(Array.from(await y.download())).toEqual([1, 2, 3, 4]);
  });

  it("output shapes follow keepDims and a full reduction gives [1]", async () => {
    for (const { shape, axes, keepDims } of LAYOUTS) {
      const x = await upload(
        randomValues(
          shape.reduce((a, b) => a * b, 1),
          5,
        ),
        shape,
      );
      const y = sum(x, axes, { keepDims });
      expect(y.shape).toEqual(
        reduceReference.forward("sum", new Float64Array(x.size), shape, axes, keepDims).shape,
      );
      x.release();
      y.release();
    }
  });

  it("the reference sends a tie to the earliest element in row-major order", () => {
    const values = Float64Array.of(0, 0, 4, 1, 1, 1, 4, 0, 0, 2, 2, 2);
    const gradient = reduceReference.backward("max", values, [2, 2, 3], Float64Array.of(1, 1), [0, 2]);
    expect(gradient[2]).toBe(1); // (0, 0, 2) comes before (1, 0, 0)
    expect(gradient[6]).toBe(0);
  });

  it("records nothing under noGrad and keeps no argmax buffer", async () => {
    const x = await upload([3, 1, 2], [3], true);
    const y = noGrad(() => max(x));
    expect(y.node).toBeNull();
    expect(Array.from(await y.download())).toEqual([3]);
  });

  it("f16 input is refused where the adapter has shader-f16", async () => {
    const device = await gpu();
    if (!device.features.has("shader-f16")) return;
    const half = Tensor.upload(device, new Float32Array(24), [2, 3, 4], "f16");
    expect(() => sum(half)).toThrow(OpError);
    expect(() => sum(half)).toThrow("sum: needs f32 x, got f16 (x: [2, 3, 4])");
  });

  it("plans chunks per adapter kind and shape (no GPU needed)", () => {
    const cpu = { kind: "cpu" } as const;
    const discrete = { kind: "discrete" } as const;
    expect(parallelTarget(cpu)).toBe(4096);
    expect(parallelTarget(discrete)).toBe(65536);
    // Enough outputs already, or short rows: one chunk per output.
    expect(reductionChunkLength(cpu, 4096, 100000)).toBe(100000);
    expect(reductionChunkLength(discrete, 1, 32)).toBe(32);
    // One output of 100003: 3126 chunks of 32 would be too many; 4096 / 1 caps nothing, 32 floors.
    expect(reductionChunkLength(cpu, 1, 100003)).toBe(
      Math.ceil(100003 / Math.min(4096, Math.ceil(100003 / 32))),
    );
    expect(reductionChunkLength(cpu, 64, 4096)).toBe(64);
    expect(reductionChunkLength(discrete, 64, 4096)).toBe(32);
    expect(reductionChunkLength(cpu, 35, 300)).toBe(Math.ceil(300 / Math.min(118, 10)));
  });

  it("the WGSL that `cxr kernels dump reduce` prints is what runs", async () => {
    const device = await gpu();
    const compiled: string[] = [];
    const pipeline = device.pipeline.bind(device);
    const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
      compiled.push(code);
      return pipeline(code, label, entryPoint);
    };
    device.pipeline = spy;
    const passes = REDUCE_KERNELS.chunked;
    try {
      const x = await upload(randomValues(5000, 5), [1, 5000], true);
      const m = max(x, 1); // two passes: first, then carried indices
      backward(m, await upload([1], [1]));
      await x.grad!.download();
      // 5000 -> 157 -> 5 -> 1 on the CPU adapter: the first pass, carried passes, then the scatter.
      expect(compiled[0]).toBe(passes["max-first"]);
      expect(compiled.at(-1)).toBe(passes["backward-max-scatter"]);
      expect(new Set(compiled.slice(1, -1))).toEqual(new Set([passes["max-carried"]]));
      compiled.length = 0;
      const z = await upload(randomValues(60, 6), [3, 4, 5], true);
      const s = mean(z, [0, 2]);
      backward(s, await upload([1, 1, 1, 1], [4]));
      await z.grad!.download();
      expect(new Set(compiled)).toEqual(new Set([passes["sum-mean"], passes["backward-broadcast"]]));
      for (const tensor of [x, m, z, s]) tensor.release();
    } finally {
      delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
    }
    const dumped = dumpKernelSources({ op: "reduce" });
    for (const [pass, code] of Object.entries(passes))
      expect(dumped).toContain(`// reduce / chunked / ${pass}${code}\n`);
  });
});
