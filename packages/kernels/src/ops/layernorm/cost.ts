/** FLOPs and bytes of layer norm, for the profiler and the benchmarks. */
import { type Shape, sizeOf } from "../../runtime/tensor.ts";

export function layerNormCost(shape: Shape) {
  const size = sizeOf(shape);
  return { flops: 7 * size, bytes: 12 * size };
}
