/** FLOPs and bytes of the reductions, for the profiler and the benchmarks. */
import { type Shape, sizeOf } from "../../runtime/tensor.ts";

/** One reduction over `shape` (one pass's worth; later passes are tiny). */
export function reduceCost(shape: Shape, outputSize: number) {
  const size = sizeOf(shape);
  return { flops: size, bytes: 4 * (size + outputSize) };
}

/** One chunked pass over an [outer, length, inner] view writing `outputSize` values. */
export function reducePassCost(outer: number, length: number, inner: number, outputSize: number) {
  return { flops: outer * length * inner, bytes: 4 * (outer * length * inner + outputSize) };
}
