/** FLOPs and bytes of group norm, for the profiler and the benchmarks. */
import { type Shape, sizeOf } from "../../runtime/tensor.ts";

export function groupNormCost(shape: Shape) {
  const size = sizeOf(shape);
  // Statistics: 4 FLOPs per element (two passes); normalise: 3. Reads x twice, writes y once.
  return { flops: 7 * size, bytes: 12 * size };
}
