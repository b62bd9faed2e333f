/** FLOPs and bytes of batch norm, for the profiler and the benchmarks. */
import { type Shape, sizeOf } from "../../runtime/tensor.ts";

export function batchNormCost(shape: Shape, training: boolean) {
  const size = sizeOf(shape);
  return training ? { flops: 7 * size, bytes: 12 * size } : { flops: 3 * size, bytes: 8 * size };
}
