/** FLOPs and bytes of the optimizer kernels, for the profiler. */

export function adamwCost(size: number) {
  return { flops: 14 * size, bytes: 28 * size };
}
