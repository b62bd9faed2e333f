/**
 * Poolings (ops/pooling/): average, max and global average against the float64 reference, forward
 * and gradient (check-op.ts tables), the reference against finite differences, bad input with its
 * exact message, the variant choice, and the WGSL that `cxr kernels dump pooling` prints being the
 * WGSL that runs.
 */
import {
  avgPool2d,
  backward,
  type Gpu,
  globalAvgPool2d,
  maxPool2d,
  type Pool2dOptions,
  Tensor,
} from "@cxr/kernels";
import { describe, expect, it } from "vitest";
import {
  choosePoolVariant,
  POOL_KERNELS,
  POOL_VARIANTS,
} from "../../packages/kernels/src/ops/pooling/index.ts";
import { type PoolParams, poolOpReference } from "../../packages/kernels/src/ops/pooling/reference.ts";
import { type BadInputCase, checkOp, type OpCase } from "./check-op.ts";
import { gpu, randomValues, upload } from "./helpers.ts";

const row = (
  reason: string,
  x: number[],
  options: Pool2dOptions,
  extra: Partial<OpCase<PoolParams>> = {},
) => ({
  reason,
  params: { x, options },
  inputs: [x],
  ...extra,
});

const cases: OpCase<PoolParams>[] = [
  row("1x1 kernel", [1, 1, 1, 1], { kernel: 1 }),
  row("2x2 stride 2 (DenseNet transition)", [2, 3, 8, 8], { kernel: 2 }),
  row("odd input, 2x2 stride 2", [1, 2, 7, 5], { kernel: 2 }),
  row("3x3 stride 2 pad 1 (DenseNet stem)", [2, 4, 17, 13], { kernel: 3, stride: 2, padding: 1 }),
  row("overlapping 3x3 stride 1", [1, 3, 6, 6], { kernel: 3, stride: 1, padding: 1 }),
  row("rectangular kernel", [1, 2, 9, 10], { kernel: [3, 2], stride: [2, 3], padding: [1, 0] }),
  row("large", [4, 64, 56, 56], { kernel: 3, stride: 2, padding: 1 }),
  row(
    "small 3x3 stride 2 pad 1, for finite differences",
    [1, 2, 5, 5],
    { kernel: 3, stride: 2, padding: 1 },
    {
      finiteDifferences: true,
    },
  ),
];

const tolerance = { atol: 1e-5, rtol: 1e-5 };

const badInputs: BadInputCase[] = [
  {
    reason: "a kernel larger than the padded input",
    run: (device) => maxPool2d(Tensor.zeros(device, [1, 1, 3, 4]), { kernel: 5 }),
    throws: "maxPool2d: kernel 5x5 is larger than the padded input (output 0x0) (x: [1, 1, 3, 4])",
  },
  {
    reason: "padding over half the kernel",
    run: (device) => avgPool2d(Tensor.zeros(device, [1, 1, 3, 4]), { kernel: 2, padding: 2 }),
    throws: "avgPool2d: padding (2, 2) must be between 0 and half the kernel (2, 2) (x: [1, 1, 3, 4])",
  },
  {
    reason: "stride 0",
    run: (device) => maxPool2d(Tensor.zeros(device, [1, 1, 3, 4]), { kernel: 2, stride: [1, 0] }),
    throws: "maxPool2d: stride must be an integer >= 1 or a pair of them, got 1,0",
  },
  {
    reason: "a kernel of size 0",
    run: (device) => avgPool2d(Tensor.zeros(device, [1, 1, 3, 4]), { kernel: 0 }),
    throws: "avgPool2d: kernel must be an integer >= 1 or a pair of them, got 0",
  },
  {
    reason: "an input that is not [N, C, H, W]",
    run: (device) => maxPool2d(Tensor.zeros(device, [3, 4]), { kernel: 2 }),
    throws: "maxPool2d: input must be [N, C, H, W] (x: [3, 4])",
  },
  {
    reason: "a u32 input",
    run: (device) => avgPool2d(Tensor.upload(device, [1, 2, 3, 4], [1, 1, 2, 2], "u32"), { kernel: 2 }),
    throws: "avgPool2d: needs f32 input, got u32 (x: [1, 1, 2, 2])",
  },
  {
    reason: "a global pooling of a tensor that is not [N, C, H, W]",
    run: (device) => globalAvgPool2d(Tensor.zeros(device, [2])),
    throws: "globalAvgPool2d: input must be [N, C, H, W] (x: [2])",
  },
];

for (const [kind, op] of [
  ["avg", avgPool2d],
  ["max", maxPool2d],
] as const) {
  checkOp(
    {
      name: `${kind}Pool2d`,
      variants: POOL_VARIANTS,
      reference: poolOpReference(kind),
      run: ([x], { options }) => op(x, options),
      tolerance: () => ({ forward: tolerance, backward: tolerance }),
    },
    cases,
    kind === "avg" ? badInputs : [],
  );
}

// The global average is the average pool over the whole image, reshaped to [N, C].
checkOp(
  {
    name: "globalAvgPool2d",
    variants: POOL_VARIANTS,
    reference: poolOpReference("avg"),
    run: ([x]) => {
      const y = globalAvgPool2d(x);
      expect(y.shape).toEqual(x.shape.slice(0, 2));
      return y;
    },
    tolerance: () => ({ forward: tolerance, backward: tolerance }),
  },
  [
    [1, 1, 1, 1],
    [3, 5, 7, 2],
    [16, 1024, 2, 2],
  ].map((shape) =>
    row(`shape [${shape.join(", ")}]: [N, C] means, the gradient spread evenly`, shape, {
      kernel: [shape[2], shape[3]],
    }),
  ),
);

describe("pooling: the rest", () => {
  it("chooses the gather kernels on every adapter (no GPU needed)", () => {
    for (const kind of ["cpu", "integrated", "discrete"] as const)
      expect(choosePoolVariant({ kind })).toBe("gather");
  });

  it("the WGSL that `cxr kernels dump pooling` prints is what runs", async () => {
    const device = await gpu();
    const compiled: string[] = [];
    const pipeline = device.pipeline.bind(device);
    const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
      compiled.push(code);
      return pipeline(code, label, entryPoint);
    };
    device.pipeline = spy;
    try {
      for (const op of [avgPool2d, maxPool2d]) {
        const x = await upload(randomValues(2 * 3 * 6 * 6, 1), [2, 3, 6, 6], true);
        const y = op(x, { kernel: 3, stride: 2, padding: 1 });
        backward(y, await upload(randomValues(y.size, 2), y.shape));
        await x.grad!.download();
        x.release();
        y.release();
      }
    } finally {
      delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
    }
    const kernels = POOL_KERNELS.gather;
    expect(compiled).toEqual([
      kernels.avgForward,
      kernels.avgBackward,
      kernels.maxForward,
      kernels.maxBackward,
    ]);
  });
});
