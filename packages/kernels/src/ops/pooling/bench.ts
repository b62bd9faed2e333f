/**
 * Pooling benchmarks at the DenseNet-121 shapes: the stem's 3x3 stride-2 max pool (64 channels at
 * 112x112) and a transition's 2x2 average pool (128 channels at 56x56), batch 4. There is one variant,
 * so each times the op next to the other pooling kind over the same window (same reads, a different
 * reduction): a yardstick, not a naive kernel.
 */
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import type { Gpu } from "../../runtime/device.ts";
import { type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import { poolCost } from "./cost.ts";
import type { Pool2dOptions } from "./geometry.ts";
import { poolWindow } from "./geometry.ts";
import { avgPool2d, maxPool2d } from "./index.ts";

function poolCase(kind: "avg" | "max", shape: Shape, options: Pool2dOptions, context: string): BenchCase {
  const g = poolWindow("pool bench", shape, options);
  const [op, other] = kind === "max" ? [maxPool2d, avgPool2d] : [avgPool2d, maxPool2d];
  return {
    op: `${kind}Pool2d`,
    shape: `[${shape.join("x")}] ${g.kernelHeight}x${g.kernelWidth}/${g.strideH}${g.padH ? ` pad ${g.padH}` : ""} fp32`,
    context,
    ...poolCost(g),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const values = new Float32Array(sizeOf(shape));
      for (let index = 0; index < values.length; index++)
        values[index] = ((index * 2654435761) % 1000) / 500 - 1;
      const x = Tensor.upload(gpu, values, shape);
      return {
        run: () => op(x, options).release(),
        naive: () => other(x, options).release(),
        naiveLabel: `yardstick: ${kind === "max" ? "avg" : "max"}Pool2d, same window`,
        dispose: () => x.release(),
      };
    },
  };
}

export const POOL_BENCH_CASES: BenchCase[] = [
  poolCase("max", [4, 64, 112, 112], { kernel: 3, stride: 2, padding: 1 }, "DenseNet-121 stem max pool"),
  poolCase("avg", [4, 128, 56, 56], { kernel: 2 }, "DenseNet-121 transition average pool"),
];
